"""Speaker settings (prefix SPEAKER_), read from the environment and `.env`."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class SpeakerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEAKER_", env_file=".env", extra="ignore", frozen=True
    )

    sink: Literal["wav", "device"] = "wav"
    """SPEAKER_SINK: "wav" writes DATA_DIR/replies/<conversation>/<utterance>.wav on a simulated
    playback clock; "device" plays through sounddevice (needs libportaudio2 and a sound card)."""
    realtime: bool = True
    """SPEAKER_REALTIME: the WAV sink plays at real-time pace (1) so "how much was heard" at an
    interrupt means what it says; 0 = as fast as possible (batch rendering, `just say`)."""
    device: str | None = None
    """SPEAKER_DEVICE: sounddevice output device name or index (default: the system's)."""
    barge_in: bool = True
    """SPEAKER_BARGE_IN: interrupt the reply when the user starts speaking over it."""
    ack_wait_s: float = 5.0
    """SPEAKER_ACK_WAIT_S: a claimed reply stays unacked until it has been heard (kept alive
    meanwhile); if the speaker dies, another instance gets it after this."""
    max_concurrent: int = 8
    """SPEAKER_MAX_CONCURRENT: replies one instance holds at once (of different
    conversations; a conversation's replies play one after another)."""
    echo_reference: bool = True
    """SPEAKER_ECHO_REFERENCE: publish what is played (16 kHz, time-stamped, core NATS only)
    so the mic of the same endpoint can cancel its echo (MIC_AEC)."""
    reply_timeout_s: float = 60.0
    """SPEAKER_REPLY_TIMEOUT_S: a reply whose audio stops coming this long without a
    tts.done ends with control.error "tts-silent"."""


def get_speaker_settings() -> SpeakerSettings:
    return SpeakerSettings()
