"""Speech-to-text stage: partial and final transcripts."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import Event, add_endpoint, upcaster


class Word(BaseModel):
    """One recognised word with its timing inside the utterance."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    word: str
    start_s: float
    """Seconds from the utterance start."""
    end_s: float
    """Seconds from the utterance start."""
    probability: float = Field(ge=0, le=1)


class TranscriptPartial(Event):
    """A provisional transcript while the user is still speaking; may be revised."""

    type: ClassVar[str] = "stt.transcript-partial"
    VERSION: ClassVar[int] = 2

    text: str = Field(max_length=10_000)
    audio_ms: float = Field(ge=0)
    """How much of the utterance the decode covered, milliseconds."""
    stable_chars: int = Field(default=0, ge=0)
    """Length of the prefix of `text` that later partials will not change."""


class Transcript(Event):
    """The final transcript of one utterance (Wyoming's `transcript`)."""

    type: ClassVar[str] = "stt.transcript"
    VERSION: ClassVar[int] = 2

    text: str = Field(max_length=10_000)
    language: str = ""
    language_probability: float = Field(default=0.0, ge=0, le=1)
    confidence: float = Field(default=0.0, ge=0, le=1)
    """Mean word probability."""
    words: tuple[Word, ...] = ()
    audio_ms: float = Field(default=0.0, ge=0)
    """Duration of the transcribed audio, milliseconds."""
    decode_ms: float = Field(default=0.0, ge=0)
    """Time the final decode took, milliseconds."""
    model: str = ""
    speculative: bool = False
    """Decoded at a pause while the end-pointer still waits: the llm may start answering it,
    but nothing is heard until the final transcript (not speculative) agrees."""


for _cls in (TranscriptPartial, Transcript):
    upcaster(_cls.type, 1)(add_endpoint)
