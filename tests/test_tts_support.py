"""Helpers for the voice tests (tts, speaker, barge-in): in-process workers and an event tap.

No tests here; the workers run for real on the test's nats-server.
"""

from __future__ import annotations

from schemas import ReplyDone, ReplySentence, ReplyStarted, derive_id, new_id
from tests.support import Tap, running

__all__ = ["Tap", "reply", "reply_done", "reply_started", "running", "sentences", "turn"]


def reply_started(conversation: str, utterance: str) -> ReplyStarted:
    """What the llm publishes first: the tts claims the reply on it."""
    return ReplyStarted(
        event_id=derive_id(utterance, "reply-started"),
        endpoint="device",
        conversation_id=conversation,
        utterance_id=utterance,
        producer="llm-test",
        language="en",
    )


def reply(conversation: str, utterance: str, texts: list[str]) -> list:  # type: ignore[type-arg]
    """A whole reply as the llm publishes it: started, sentences, done."""
    return [
        reply_started(conversation, utterance),
        *sentences(conversation, utterance, texts),
        reply_done(conversation, utterance, texts),
    ]


def sentences(conversation: str, utterance: str, texts: list[str]) -> list[ReplySentence]:
    """Reply sentences as the llm worker would publish them (ids derived from the turn)."""
    return [
        ReplySentence(
            event_id=derive_id(utterance, "sentence", i),
            endpoint="device",
            conversation_id=conversation,
            utterance_id=utterance,
            seq=i,
            producer="llm-test",
            text=t,
            index=i,
        )
        for i, t in enumerate(texts)
    ]


def reply_done(conversation: str, utterance: str, texts: list[str]) -> ReplyDone:
    return ReplyDone(
        event_id=derive_id(utterance, "reply-done"),
        endpoint="device",
        conversation_id=conversation,
        utterance_id=utterance,
        producer="llm-test",
        text=" ".join(texts),
        sentences=len(texts),
        tokens=sum(len(t.split()) for t in texts),
    )


def turn() -> tuple[str, str]:
    return new_id()[:12], new_id()
