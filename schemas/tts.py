"""Text-to-speech stage: the reply's audio, streamed per sentence."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.envelope import Event, OfGeneration, PayloadEvent, add_endpoint, upcaster
from schemas.mic import PcmFormat


class TtsStarted(OfGeneration, Event):
    """The tts took this reply: its audio chunks follow in this format (Wyoming's
    audio-start). The endpoint's speaker claims the reply on this event."""

    type: ClassVar[str] = "tts.started"

    rate: int = Field(gt=0, le=192_000)
    """Sample rate of the reply's audio chunks, Hertz."""
    width: int = Field(default=2, ge=1, le=4)
    """Bytes per sample."""
    channels: int = Field(default=1, ge=1, le=8)
    voice: str = Field(default="", max_length=256)
    speculative: bool = False
    """Its generation is speculative: the speaker holds it until llm.reply-committed."""


class TtsAudioChunk(PcmFormat, OfGeneration, PayloadEvent):
    """A slice of synthesized reply audio; `seq` orders the chunks of one reply."""

    type: ClassVar[str] = "tts.audio-chunk"
    VERSION: ClassVar[int] = 2

    rate: int = Field(gt=0, le=192_000)
    """Sample rate, Hertz."""
    width: int = Field(default=2, ge=1, le=4)
    """Bytes per sample."""
    channels: int = Field(default=1, ge=1, le=8)
    sentence_index: int = Field(ge=0)
    """Which reply-sentence this audio speaks."""
    offset_ms: float = Field(default=0.0, ge=0)
    """Position of the first sample inside its sentence, milliseconds."""


class SentenceDone(OfGeneration, Event):
    """One sentence has been fully synthesized."""

    type: ClassVar[str] = "tts.sentence-done"
    VERSION: ClassVar[int] = 2

    sentence_index: int = Field(ge=0)
    text: str = Field(max_length=4096)
    audio_ms: float = Field(ge=0)
    first_audio_ms: float = Field(default=0.0, ge=0)
    """From the sentence's arrival to its first audio chunk, milliseconds."""
    real_time_factor: float = Field(default=0.0, ge=0)


class TtsDone(OfGeneration, Event):
    """All sentences of the reply are synthesized (or synthesis was interrupted)."""

    type: ClassVar[str] = "tts.done"
    VERSION: ClassVar[int] = 2

    sentences: int = Field(ge=0)
    chunks: int = Field(ge=0)
    """Number of tts.audio-chunk events emitted for the reply (seq 0..chunks-1)."""
    audio_ms: float = Field(ge=0)
    interrupted: bool = False


for _cls in (TtsAudioChunk, SentenceDone, TtsDone):
    upcaster(_cls.type, 1)(add_endpoint)
