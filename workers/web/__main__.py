"""`python -m workers.web`: the web gateway (the page and the "web" endpoint)."""

import os
import sys

from workers.runtime.service import run_worker

if __name__ == "__main__":
    os.environ.setdefault("ENDPOINT", "web")
    from workers.web.gateway import WebWorker

    sys.exit(run_worker(WebWorker, "web"))
