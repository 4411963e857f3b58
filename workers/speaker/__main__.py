import sys

from workers.runtime.endpoint.sinks import SpeakerError
from workers.runtime.service import run_worker
from workers.speaker.worker import SpeakerWorker

if __name__ == "__main__":
    try:
        sys.exit(run_worker(SpeakerWorker, "speaker"))
    except SpeakerError as exc:
        print(f"speaker: error: {exc}", file=sys.stderr)
        sys.exit(2)
