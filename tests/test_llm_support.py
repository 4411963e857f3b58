"""Helpers for the llm tests: in-process workers, an event tap, turns. No tests here."""

from __future__ import annotations

from typing import Any

from schemas import Transcript, new_id
from tests.support import Tap, running
from workers.llm.config import LlmSettings

__all__ = ["Tap", "llm_settings", "running", "transcript"]


def llm_settings(**kw: Any) -> LlmSettings:
    kw.setdefault("max_tokens", 48)
    kw.setdefault("memory_wait_s", 2.0)
    # In-process workers: the niceness would stay with pytest and every worker it starts.
    kw.setdefault("nice", 0)
    # These tests make their transcripts before the worker has loaded its model, which
    # beside a CPU hog took up to 41 s (ops/stress.sh), so a 30 s LLM_MAX_AGE_S ended their
    # turns as "stale". A live stt stamps a transcript as it publishes it; the staleness
    # rule has its own test (test_endpoints).
    kw.setdefault("max_age_s", 600.0)
    return LlmSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def transcript(text: str, conversation_id: str | None = None) -> Transcript:
    return Transcript(
        endpoint="device",
        conversation_id=conversation_id or new_id()[:12],
        utterance_id=new_id(),
        text=text,
        producer="stt-test",
        confidence=0.9,
    )
