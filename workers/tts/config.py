"""TTS settings (prefix TTS_), read from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TtsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", env_file=".env", extra="ignore", frozen=True
    )

    backend: Literal["piper", "xtts"] = "piper"
    """TTS_BACKEND: "piper" (embedded, CPU) or "xtts" (XTTS v2, needs coqui-tts + torch)."""
    voice: Path | None = None
    """TTS_VOICE: a Piper .onnx voice (its .onnx.json beside it); default: the bundled one."""
    output_rate: int = 22_050
    """TTS_OUTPUT_RATE: rate of tts.audio-chunk events, Hertz (Piper's native rate: no resample)."""
    chunk_ms: int = 80
    """TTS_CHUNK_MS: length of one tts.audio-chunk, milliseconds (40-100 keeps barge-in sharp)."""
    clause_split_chars: int = 120
    """TTS_CLAUSE_SPLIT_CHARS: sentences longer than this are synthesized clause by clause so
    their audio starts sooner (0: never split)."""
    first_clause_chars: int = 40
    """TTS_FIRST_CLAUSE_CHARS: the same for a reply's first sentence, whose first audio is the
    one the user waits for (later sentences are synthesized while earlier ones play)."""
    length_scale: float | None = None
    """TTS_LENGTH_SCALE: Piper speaking rate (>1 slower); default: the voice's own."""
    noise_scale: float | None = None
    """TTS_NOISE_SCALE: Piper's voice variation; default: the voice's own. With
    TTS_NOISE_W_SCALE it makes each synthesis of a text a little different: 0 for both gives
    the same audio every time (replays that compare, tests)."""
    noise_w_scale: float | None = None
    """TTS_NOISE_W_SCALE: Piper's timing variation; default: the voice's own."""
    ack_wait_s: float = 5.0
    """TTS_ACK_WAIT_S: the owner of a reply tells JetStream it is alive every third of this;
    if it dies, another instance takes the reply over after this long."""
    max_concurrent: int = 4
    """TTS_MAX_CONCURRENT: replies one instance owns at once (synthesis takes turns)."""
    first_audio_first: bool = True
    """TTS_FIRST_AUDIO_FIRST: when replies take turns, a reply's first piece goes before the
    later pieces of replies already speaking (false: first come first served)."""
    reply_timeout_s: float = 60.0
    """TTS_REPLY_TIMEOUT_S: a reply whose next sentence or reply-done does not come for
    this long (its llm died for good) ends with control.error "reply-timeout"."""

    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    """TTS_DEVICE: where XTTS runs."""
    xtts_model_dir: Path | None = None
    """TTS_XTTS_MODEL_DIR: folder with config.json, model.pth and vocab.json."""
    xtts_model_name: str = "tts_models/multilingual/multi-dataset/xtts_v2"
    """TTS_XTTS_MODEL_NAME: Coqui model-manager name, used when TTS_XTTS_MODEL_DIR is unset."""
    speaker_wav: Path | None = None
    """TTS_SPEAKER_WAV: reference recording of the voice to clone (3-30 s of clean speech)."""
    latent_cache_dir: Path | None = None
    """TTS_LATENT_CACHE_DIR: where speaker latents are cached; default DATA_DIR/xtts-latents."""
    language: str = "en"
    """TTS_LANGUAGE: XTTS language code."""
    threads: int = Field(default=0, ge=0)
    """TTS_THREADS: CPU threads the model uses: XTTS's torch, Piper's onnxruntime (0: their
    default, one per core). On a busy 2-core machine 1 thread ran the tiny XTTS model's
    sentence in 3.0-3.2 s, 2 threads in 4.5-10 s (they wait on each other's barriers while
    other processes hold a core)."""
    spin: bool = False
    """TTS_SPIN: let Piper's onnxruntime threads spin between steps (its default). Spinning
    threads keep their cores busy while they wait, and on a small machine those cores are
    the llm's and the stt's: off, four conversations at once on 2 cores saw the tts take
    0.7-1.7 cores while the llm decoded first sentences beside it."""
    xtts_stream_chunk_size: int = 20
    """TTS_XTTS_STREAM_CHUNK_SIZE: GPT tokens per streamed XTTS chunk (smaller: sooner audio)."""


def get_tts_settings() -> TtsSettings:
    return TtsSettings()
