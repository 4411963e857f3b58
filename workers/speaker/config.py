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
    conversation_wav: bool = False
    """SPEAKER_CONVERSATION_WAV: also write both sides of the conversation, on one timeline,
    to DATA_DIR/replies/<conversation>/conversation.wav."""
    barge_in: bool = True
    """SPEAKER_BARGE_IN: interrupt the reply when the user starts speaking over it."""
    ack_wait_s: float = 5.0
    """SPEAKER_ACK_WAIT_S: a reply's tts.done stays unacked until it has been heard (kept
    alive meanwhile); if the speaker dies, it comes back to the restarted one after this."""


def get_speaker_settings() -> SpeakerSettings:
    return SpeakerSettings()
