"""`python -m workers.llm.selfcheck`: does the embedded llm answer on this CPU?

Runs the real backend on a real chat prompt (many tokens in one batch) in a child process, so
a llama.cpp build that crashes on this CPU (SIGSEGV, SIGILL) is reported with its signal
instead of taking the caller down. Exit 0 when it answered; 1 with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from workers.llm.backends import EmbeddedBackend
from workers.llm.config import get_llm_settings


async def _answer() -> str:
    # In the format the worker runs (LLM_QUANT), which also makes that file once, at install.
    settings = get_llm_settings()
    model = settings.model if settings.backend == "embedded" else ""
    backend = EmbeddedBackend(model, quant=settings.quant, max_tokens=4, context_tokens=512)
    await backend.warmup([{"role": "user", "content": "Say hello in three words."}])
    return backend.model


def main() -> int:
    if sys.argv[1:] == ["--child"]:
        print(f"llm selfcheck: {asyncio.run(_answer())} answered", file=sys.stderr)
        return 0
    done = subprocess.run(
        [sys.executable, "-m", "workers.llm.selfcheck", "--child"], check=False, timeout=300
    )
    if done.returncode < 0:
        print(f"llm selfcheck: llama.cpp died with signal {-done.returncode}", file=sys.stderr)
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
