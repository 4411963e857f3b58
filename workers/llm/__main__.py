import sys

from workers.llm.worker import LlmWorker
from workers.runtime.service import run_worker

sys.exit(run_worker(LlmWorker, "llm"))
