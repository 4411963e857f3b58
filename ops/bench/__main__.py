"""`python -m ops.bench NAME [ARGS]`: run one benchmark.

bus, stt, llm, quant, tts, e2e, turn, load, answers, peers, wyoming, web, browser, aec, wake.
"""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    names = "bus stt llm quant tts e2e turn load answers peers wyoming web browser aec wake".split()
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print(f"usage: just bench {{{'|'.join(names)}}} [options]", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"ops.bench.{sys.argv[1]}")
    except ModuleNotFoundError as exc:
        print(f"error: benchmark {sys.argv[1]!r} is not available ({exc})", file=sys.stderr)
        return 2
    return int(module.main(sys.argv[2:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
