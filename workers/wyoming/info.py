"""What `describe` answers: the programs this endpoint serves, as Home Assistant reads them.

asr, tts and handle are the stt, tts and llm workers behind the bus. Wake word detection is
not advertised: no wake-word engine runs on the bus yet. When one does, its programs go in
`wake_programs` and the handler routes `detect` requests to it (see `handler.REQUESTS`).
"""

from __future__ import annotations

import os

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
    WakeProgram,
)

from workers.wyoming.config import WyomingSettings

ATTRIBUTION = Attribution(name="voicebus", url="https://github.com/")
VERSION = "0.1.0"


def wake_programs() -> list[WakeProgram]:
    """The extension point for wake word detection: none yet."""
    return []


def stt_model_name() -> str:
    return os.environ.get("STT_MODEL") or "whisper-tiny"


def llm_model_name() -> str:
    if os.environ.get("LLM_BACKEND") == "ollama":
        return os.environ.get("LLM_MODEL") or "mistral:7b-instruct"
    return os.environ.get("LLM_MODEL") or "smollm2-135m-instruct"


def build_info(settings: WyomingSettings) -> Info:
    languages = settings.language_list()
    asr = AsrProgram(
        name="voicebus-stt",
        attribution=ATTRIBUTION,
        installed=True,
        description="voicebus speech recognition (Whisper) over its event bus",
        version=VERSION,
        models=[
            AsrModel(
                name=stt_model_name(),
                attribution=ATTRIBUTION,
                installed=True,
                description="faster-whisper model of the stt worker",
                version=None,
                languages=languages,
            )
        ],
        supports_transcript_streaming=True,
    )
    tts = TtsProgram(
        name="voicebus-tts",
        attribution=ATTRIBUTION,
        installed=True,
        description="voicebus text-to-speech (Piper) over its event bus",
        version=VERSION,
        voices=[
            TtsVoice(
                name=settings.voice,
                attribution=ATTRIBUTION,
                installed=True,
                description="the tts worker's voice",
                version=None,
                languages=settings.voice_language_list(),
            )
        ],
        supports_synthesize_streaming=True,
    )
    handle = HandleProgram(
        name="voicebus-llm",
        attribution=ATTRIBUTION,
        installed=True,
        description="voicebus conversation agent (the llm worker, memory from the event log)",
        version=VERSION,
        models=[
            HandleModel(
                name=llm_model_name(),
                attribution=ATTRIBUTION,
                installed=True,
                description="language model of the llm worker",
                version=None,
                languages=languages,
            )
        ],
        supports_handled_streaming=True,
        supports_home_control=False,
    )
    return Info(asr=[asr], tts=[tts], handle=[handle], wake=wake_programs())
