"""Microphone stage: voice activity and the user's audio (Wyoming's voice-started/-stopped)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.envelope import Event, PayloadEvent, add_endpoint, upcaster

#: The pipeline's input format: 16 kHz mono int16 (what Whisper and the VADs want).
PIPELINE_RATE = 16_000
PIPELINE_WIDTH = 2
PIPELINE_CHANNELS = 1


class PcmFormat:
    """Mixin validation for events that carry PCM."""

    @model_validator(mode="after")
    def _check_pcm(self):  # type: ignore[no-untyped-def]
        frame = self.width * self.channels  # type: ignore[attr-defined]
        if len(self.audio) % frame:  # type: ignore[attr-defined]
            raise ValueError(
                f"audio length {len(self.audio)} is not a multiple of the frame size {frame}"  # type: ignore[attr-defined]
            )
        return self


class VoiceStarted(Event):
    """The user started speaking (VAD onset, pre-roll included in the audio that follows)."""

    type: ClassVar[str] = "mic.voice-started"
    VERSION: ClassVar[int] = 2

    source: str = Field(default="mic", max_length=256)
    """Where the audio comes from: "mic" or a file name."""
    stream_offset_ms: float = Field(default=0.0, ge=0)
    """Position of the onset in the source stream, milliseconds."""
    preroll_ms: float = Field(default=0.0, ge=0)
    """Audio before the onset that is included in the utterance, milliseconds."""
    resumes: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    """The utterance this one continues ("" = a new turn): the user went on speaking soon
    after that turn ended (MIC_TURN_RESUME_MS), so it was a pause, not a turn's end. This
    utterance's audio starts with that one's, and that turn is not answered: its reply is
    stopped and left out of memory. Its `preroll_ms` covers that utterance and the pause:
    everything before the new speech's onset."""


class MicAudioChunk(PcmFormat, PayloadEvent):
    """A fixed-size slice of the user's utterance; `seq` orders the chunks of one utterance."""

    type: ClassVar[str] = "mic.audio-chunk"
    VERSION: ClassVar[int] = 2

    rate: Literal[16000] = PIPELINE_RATE
    """Sample rate, Hertz."""
    width: Literal[2] = PIPELINE_WIDTH
    """Bytes per sample."""
    channels: Literal[1] = PIPELINE_CHANNELS
    """Interleaved channels."""
    offset_ms: float = Field(default=0.0, ge=0)
    """Position of the first sample in the utterance, milliseconds."""


class VoiceStopped(Event):
    """The user stopped speaking (end-pointed); the utterance has `chunks` audio chunks."""

    type: ClassVar[str] = "mic.voice-stopped"
    VERSION: ClassVar[int] = 2

    reason: Literal["silence", "max-length", "end-of-stream", "cancelled"] = "silence"
    """Why the utterance ended."""
    chunks: int = Field(ge=0)
    """Number of audio chunks the utterance has (seq 0..chunks-1): lets consumers detect gaps."""
    duration_ms: float = Field(ge=0)
    """Audio duration of the utterance, milliseconds."""
    speech_end_offset_ms: float = Field(default=0.0, ge=0)
    """Position in the utterance where speech actually ended (before the hangover), ms."""
    speech_end_ts: float = Field(ge=0)
    """When speech actually ended, Unix seconds: the capture time of the last voiced frame.
    Voice-to-voice latency as people feel it runs from here, not from this event's `ts`,
    which comes after the end-pointer's wait."""


class TurnDecision(Event):
    """The end-pointer decided, at a pause, whether the user's turn is over: one event per
    decision, with the end-of-turn model's score, so endpointing can be tuned from replays."""

    type: ClassVar[str] = "mic.turn-decision"
    VERSION: ClassVar[int] = 1

    policy: Literal["vad", "smart"] = "vad"
    """MIC_TURN: "vad" ends a turn after a fixed silence; "smart" asks an end-of-turn model."""
    outcome: Literal["end", "wait"]
    """"end" closes the turn (a voice-stopped follows); "wait" keeps listening."""
    reason: Literal[
        "hangover",
        "model-complete",
        "model-incomplete",
        "transcript-incomplete",
        "max-silence",
    ]
    """Why: the VAD's fixed silence, the model's verdict, the transcript's last word
    overruling a "complete", or the longest silence a turn may hold."""
    score: float | None = Field(default=None, ge=0, le=1)
    """The model's probability that the turn is complete (None: not asked)."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    """Score at or above which the model's verdict is "complete"."""
    silence_ms: float = Field(ge=0)
    """Silence after the last voiced frame when the decision was made, milliseconds."""
    audio_ms: float = Field(ge=0)
    """Position of the decision in the utterance, milliseconds."""
    model_ms: float = Field(default=0.0, ge=0)
    """Time the model took (features + inference), milliseconds."""
    transcript_tail: str = Field(default="", max_length=256)
    """The last words of the stt's speculative transcript the decision saw ("" = none)."""


upcaster(VoiceStarted.type, 1)(add_endpoint)
upcaster(MicAudioChunk.type, 1)(add_endpoint)


@upcaster(VoiceStopped.type, 1)
def _voice_stopped_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had no endpoint and no speech_end_ts: the mic published voice-stopped as the
    hangover ended, in real time, so speech ended that much audio earlier."""
    data = add_endpoint(data)
    wait_ms = float(data.get("duration_ms", 0.0)) - float(data.get("speech_end_offset_ms", 0.0))
    data.setdefault("speech_end_ts", max(0.0, float(data.get("ts", 0.0)) - wait_ms / 1000.0))
    return data


class EchoCancelled(Event):
    """How much of a reply's echo the mic's canceller removed, published once the reply's
    reference has ended; `utterance_id` is the turn the reply answered."""

    type: ClassVar[str] = "mic.echo-cancelled"
    VERSION: ClassVar[int] = 1

    canceller: str = Field(default="off", max_length=32)
    """speex, webrtc or off."""
    erle_db: float | None = None
    """Echo return loss enhancement, dB: echo power in the mic over what was left after
    cancellation, on blocks where the reply played and the user was silent (None: none)."""
    echo_ms: float = Field(default=0.0, ge=0)
    """Reply audio the measurement covers, milliseconds."""
    gated_ms: float = Field(default=0.0, ge=0)
    """Audio the residual-echo gate silenced (echo only), milliseconds."""


class WakeDetected(Event):
    """The wake phrase was heard; the speech after it is the next turn. `utterance_id` is a
    fresh id of the detection (no turn yet)."""

    type: ClassVar[str] = "mic.wake-detected"
    VERSION: ClassVar[int] = 1
    #: Not a turn: the turn is the utterance after it.
    TURN_SCOPED: ClassVar[bool] = False

    name: str = Field(max_length=64)
    """The wake word model: okay_nabu, hey_jarvis, hey_mycroft or alexa."""
    score: float = Field(ge=0, le=1)
    """The model's probability at the detection."""
    offset_ms: float = Field(ge=0)
    """Where the phrase ended in the mic stream, milliseconds from its start."""
