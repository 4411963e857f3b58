import sys

from workers.runtime.service import run_worker
from workers.speaker.sinks import SpeakerError
from workers.speaker.worker import SpeakerWorker

if __name__ == "__main__":
    try:
        sys.exit(run_worker(SpeakerWorker, "speaker"))
    except SpeakerError as exc:
        print(f"speaker: error: {exc}", file=sys.stderr)
        sys.exit(2)
