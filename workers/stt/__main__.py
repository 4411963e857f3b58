"""`python -m workers.stt`: settings from STT_* (see workers/stt/config.py)."""

from __future__ import annotations

import sys

from workers.runtime.models import ModelNotFoundError
from workers.runtime.service import run_worker
from workers.stt.backends import SttError
from workers.stt.worker import SttWorker


def main() -> int:
    try:
        return run_worker(SttWorker, "stt")
    except (ModelNotFoundError, SttError) as exc:
        print(f"stt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
