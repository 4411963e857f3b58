"""`--compare VAR=VALUE[,VAR=VALUE]`: a bench's runs with the defaults and with some worker
settings, alternated round by round (defaults, setting, setting, defaults, ...) so the
machine's drift favours neither side. The workers inherit this process's environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from workers.cli.pipeline import progress

T = TypeVar("T")


def parse(spec: str) -> dict[str, str]:
    """VAR=VALUE[,VAR=VALUE] as a mapping; ValueError says what is wrong."""
    pairs = [item.partition("=") for item in spec.split(",")]
    if not pairs or not all(sep and name for name, sep, _ in pairs):
        raise ValueError(f"--compare {spec!r}: want VAR=VALUE[,VAR=VALUE]")
    return {name.strip(): value for name, _, value in pairs}


def alternated(spec: str, rounds: int, run: Callable[[], T]) -> dict[bool, list[T]]:
    """`run()` once per side and round: runs[False] with the defaults, runs[True] with the
    settings of `spec` (already checked with `parse`). The environment is as it was
    afterwards."""
    setting = parse(spec)
    saved = {name: os.environ.get(name) for name in setting}

    def use(variant: bool) -> None:
        for name, value in setting.items():
            old = saved[name]
            if variant:
                os.environ[name] = value
            elif old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

    runs: dict[bool, list[T]] = {False: [], True: []}
    try:
        for i in range(rounds):
            for variant in (False, True) if i % 2 == 0 else (True, False):
                progress(f"round {i + 1}/{rounds}: {spec if variant else 'defaults'}")
                use(variant)
                runs[variant].append(run())
    finally:
        use(False)
    return runs
