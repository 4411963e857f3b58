import sys

from workers.recorder.worker import Recorder
from workers.runtime.service import run_worker

sys.exit(run_worker(Recorder, "recorder"))
