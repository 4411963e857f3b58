import sys

from workers.runtime.models import ModelNotFoundError
from workers.runtime.service import run_worker
from workers.tts.worker import TtsWorker
from workers.tts.xtts import XttsError

if __name__ == "__main__":
    try:
        sys.exit(run_worker(TtsWorker, "tts"))
    except (ModelNotFoundError, XttsError) as exc:
        print(f"tts: error: {exc}", file=sys.stderr)
        sys.exit(2)
