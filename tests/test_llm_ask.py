"""`just ask`: a question over the bus to a real llm worker, a follow-up from the log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from workers.llm.backends import EmbeddedBackend
from workers.llm.config import LlmSettings
from workers.runtime.natsd import free_port


def run_ask(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nothing there: ask starts NATS
        "DATA_DIR": str(tmp_path / "data"),
        "LLM_MAX_TOKENS": "32",
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.ask", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ask_prints_the_reply_and_a_follow_up_remembers_it(tmp_path: Path) -> None:
    first = run_ask(tmp_path, "My name is Alice. Say hello to me.")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()  # the reply, streamed as plain text
    conversation = re.search(r"\(conversation (\w+)\)", first.stderr)
    assert conversation, first.stderr

    second = run_ask(tmp_path, "What is my name?", "--json", "--conversation", conversation[1])
    assert second.returncode == 0, second.stderr
    reply = json.loads(second.stdout.strip().splitlines()[-1])
    assert reply["conversation_id"] == conversation[1]
    assert reply["reply_text"] and reply["sentences"]
    assert reply["finish_reason"] in ("stop", "length")
    assert 0 < reply["first_token_ms"] <= reply["first_sentence_ms"]
    # The first turn is in the prompt, rebuilt from the log by a fresh worker process.
    backend = EmbeddedBackend(threads=1)
    asyncio.run(backend.start())
    alone = [
        {"role": "system", "content": LlmSettings(_env_file=None).system_prompt},  # type: ignore[call-arg]
        {"role": "user", "content": "What is my name?"},
    ]
    assert reply["prompt_tokens"] > len(backend.prompt_tokens(alone)[0]) + 10
    asyncio.run(backend.aclose())


def test_ask_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    empty = run_ask(tmp_path, "  ")
    assert empty.returncode == 2 and empty.stderr.strip() == "ask: error: empty QUESTION"
    bad = run_ask(tmp_path, "Hi", "--conversation", "a b")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "bad --conversation" in bad.stderr
