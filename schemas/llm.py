"""Language-model stage: the reply as tokens, speakable sentences and a done marker."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.envelope import Event


class ReplyToken(Event):
    """One streamed piece of the reply (a model token, possibly several characters)."""

    type: ClassVar[str] = "llm.reply-token"

    text: str = Field(max_length=4096)
    index: int = Field(ge=0)
    """Token index in the reply, from 0."""


class ReplySentence(Event):
    """A speakable piece of the reply (sentence or clause), ready for TTS."""

    type: ClassVar[str] = "llm.reply-sentence"

    text: str = Field(min_length=1, max_length=4096)
    index: int = Field(ge=0)
    """Sentence index in the reply, from 0."""


class ReplyDone(Event):
    """The reply is complete (or was cut short); `text` is everything generated."""

    type: ClassVar[str] = "llm.reply-done"

    text: str = Field(max_length=100_000)
    sentences: int = Field(ge=0)
    """Number of reply-sentence events emitted (index 0..sentences-1)."""
    tokens: int = Field(ge=0)
    finish_reason: Literal["stop", "length", "interrupted", "error"] = "stop"
    model: str = ""
    prompt_tokens: int = Field(default=0, ge=0)
    first_token_ms: float = Field(default=0.0, ge=0)
    """From the transcript's arrival to the first token, milliseconds."""
    tokens_per_s: float = Field(default=0.0, ge=0)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"
