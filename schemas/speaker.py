"""Speaker stage: what the user actually heard."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.envelope import MAX_INT32, Event, OfGeneration, PayloadEvent, add_endpoint, upcaster
from schemas.mic import PIPELINE_CHANNELS, PIPELINE_RATE, PIPELINE_WIDTH, PcmFormat


class PlaybackStarted(OfGeneration, Event):
    """The first sample of the reply reached the output device (or sink)."""

    type: ClassVar[str] = "speaker.playback-started"
    VERSION: ClassVar[int] = 2

    sink: str = ""
    """"device" or the WAV path."""


class PlaybackDone(OfGeneration, Event):
    """Playback of the reply ended; says exactly how much was heard."""

    type: ClassVar[str] = "speaker.playback-done"
    VERSION: ClassVar[int] = 2

    played_ms: float = Field(ge=0)
    """Audio actually played, milliseconds."""
    interrupted: bool = False
    sentences_heard: int = Field(default=0, ge=0, le=MAX_INT32)
    """Sentences played to the end."""
    last_sentence_index: int = Field(default=-1, ge=-1)
    """Sentence playing when playback ended (-1: none)."""
    last_sentence_played_ms: float = Field(default=0.0, ge=0)
    """How far into that sentence playback got, milliseconds."""
    wav: str = ""
    """Where the reply audio was written, if a WAV sink was used."""


for _cls in (PlaybackStarted, PlaybackDone):
    upcaster(_cls.type, 1)(add_endpoint)


class SpeakerReference(PcmFormat, OfGeneration, PayloadEvent):
    """What the speaker actually plays, for the mic's echo canceller: live only (core NATS
    on `live.<endpoint>.<conversation>.speaker.reference`, never stored). An empty `audio`
    with `halted` says nothing was played from `played_at` on."""

    type: ClassVar[str] = "speaker.reference"
    VERSION: ClassVar[int] = 1

    rate: Literal[16000] = PIPELINE_RATE
    """Sample rate, Hertz (resampled from the reply's rate)."""
    width: Literal[2] = PIPELINE_WIDTH
    """Bytes per sample."""
    channels: Literal[1] = PIPELINE_CHANNELS
    """Interleaved channels."""
    played_at: float = Field(ge=0)
    """When the first sample reaches the listener, Unix seconds (the output's clock)."""
    halted: bool = False
    """Playback stopped at `played_at`: nothing queued after it is heard."""
