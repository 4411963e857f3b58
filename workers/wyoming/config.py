"""Wyoming bridge settings (prefix WYOMING_), read from the environment and `.env`."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The endpoint every Wyoming client's conversations belong to (the services serve it by
#: default, `ENDPOINTS`; NATS lets the `wyoming` role publish on it only).
ENDPOINT = "wyoming"


def default_voice() -> str:
    """The voice the tts worker speaks with, named as Wyoming clients see it, without loading
    it: the stem of TTS_VOICE, else the bundled Piper voice (or "xtts" for TTS_BACKEND=xtts)."""
    if os.environ.get("TTS_VOICE"):
        return Path(os.environ["TTS_VOICE"]).stem
    if os.environ.get("TTS_BACKEND", "piper") == "xtts":
        return "xtts"
    return "en_US-joe-medium"


class WyomingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WYOMING_", env_file=".env", extra="ignore", frozen=True
    )

    uri: str = "tcp://127.0.0.1:10700"
    """WYOMING_URI: where the bridge listens (tcp://HOST:PORT or unix://PATH). 10700 is the
    port Home Assistant suggests; use tcp://0.0.0.0:10700 to let another machine in."""
    voice: str = Field(default_factory=default_voice)
    """WYOMING_VOICE: the tts voice's name in `info` (default: from TTS_VOICE/TTS_BACKEND)."""
    voice_languages: str = "en,en_US"
    """WYOMING_VOICE_LANGUAGES: languages the voice speaks (a request for another is refused)."""
    languages: str = "en"
    """WYOMING_LANGUAGES: languages `info` advertises for asr and handle (comma-separated;
    Whisper tiny is multilingual, the bundled SmolLM2 answers best in English)."""
    max_text_chars: int = Field(default=2000, ge=1, le=10_000)
    """WYOMING_MAX_TEXT_CHARS: longest text a synthesize or handle request may carry."""
    max_audio_s: float = Field(default=30.0, gt=0)
    """WYOMING_MAX_AUDIO_S: longest audio a transcribe request may send."""
    timeout_s: float = Field(default=60.0, gt=0)
    """WYOMING_TIMEOUT_S: a request whose result does not come within this long (a worker is
    missing) gets a Wyoming `error`."""
    start_workers: bool = True
    """WYOMING_START_WORKERS: `just wyoming` starts NATS and the recorder, stt, llm and tts
    workers unless they already serve the endpoint (e.g. under `just up`)."""

    def voice_language_list(self) -> list[str]:
        return [v.strip() for v in self.voice_languages.split(",") if v.strip()]

    def language_list(self) -> list[str]:
        return [v.strip() for v in self.languages.split(",") if v.strip()]
