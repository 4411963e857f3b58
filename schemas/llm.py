"""Language-model stage: the reply as tokens, speakable sentences and a done marker."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.envelope import Event, OfGeneration, add_endpoint, upcaster


class ReplyStarted(OfGeneration, Event):
    """The llm took this turn and will answer it: tokens, sentences and reply-done follow.

    Published before the first token, so the tts can claim the reply (and get ready) while
    the model is still thinking."""

    type: ClassVar[str] = "llm.reply-started"

    language: str = Field(default="", max_length=16)
    """Language of the user's transcript (and so of the reply), e.g. "en"; "" if unknown."""
    model: str = Field(default="", max_length=256)
    question: str = Field(default="", max_length=10_000)
    """The transcript this generation answers."""
    speculative: bool = False
    """Started on a speculative transcript while the end-pointer still waited: nothing of
    it may be heard until llm.reply-committed names its generation."""


class ReplyCommitted(OfGeneration, Event):
    """The turn is over and its final transcript is the one this speculative generation
    answers: it is the reply (it may now be heard)."""

    type: ClassVar[str] = "llm.reply-committed"

    transcript_event_id: str = Field(default="", max_length=64)
    """The final transcript that confirmed it."""


class ReplyDiscarded(OfGeneration, Event):
    """This generation is not the answer: a speculation answering a question the user did
    not end up asking (they went on speaking), or a reply abandoned half-way when its llm
    died (the turn is answered again under a new generation). It is never kept in memory or
    replayed as the answer."""

    type: ClassVar[str] = "llm.reply-discarded"

    reason: Literal["changed", "superseded", "error", "abandoned", "resumed"] = "changed"
    """changed: the final transcript differs; superseded: a newer speculation replaced it;
    abandoned: the llm generating it was lost mid-reply; resumed: the user went on speaking
    after a pause (mic.voice-started.resumes), so it answers half a sentence (if it had
    started playing, that onset stopped it as a barge-in)."""


class ReplyToken(OfGeneration, Event):
    """One streamed piece of the reply (a model token, possibly several characters)."""

    type: ClassVar[str] = "llm.reply-token"
    VERSION: ClassVar[int] = 2

    text: str = Field(max_length=4096)
    index: int = Field(ge=0)
    """Token index in the reply, from 0."""


class ReplySentence(OfGeneration, Event):
    """A speakable piece of the reply (sentence or clause), ready for TTS."""

    type: ClassVar[str] = "llm.reply-sentence"
    VERSION: ClassVar[int] = 2

    text: str = Field(min_length=1, max_length=4096)
    index: int = Field(ge=0)
    """Sentence index in the reply, from 0."""


class ReplyDone(OfGeneration, Event):
    """The reply is complete (or was cut short); `text` is everything generated."""

    type: ClassVar[str] = "llm.reply-done"
    VERSION: ClassVar[int] = 2

    text: str = Field(max_length=100_000)
    sentences: int = Field(ge=0)
    """Number of reply-sentence events emitted (index 0..sentences-1)."""
    tokens: int = Field(ge=0)
    finish_reason: Literal["stop", "length", "interrupted", "error", "discarded", "resumed"] = (
        "stop"
    )
    """resumed: the user went on speaking, so the turn was a pause; the utterance that
    resumed it (mic.voice-started.resumes) holds the whole sentence and is answered instead."""
    model: str = ""
    prompt_tokens: int = Field(default=0, ge=0)
    first_token_ms: float = Field(default=0.0, ge=0)
    """From the transcript's arrival to the first token, milliseconds."""
    tokens_per_s: float = Field(default=0.0, ge=0)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"


for _cls in (ReplyToken, ReplySentence, ReplyDone):
    upcaster(_cls.type, 1)(add_endpoint)
