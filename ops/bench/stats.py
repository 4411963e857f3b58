"""Statistics shared by the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Iterable


def pct(values: Iterable[float | None], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of the values that exist; NaN when there are none."""
    xs = sorted(x for x in values if x is not None and not math.isnan(x))
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]
