"""The event catalogue: the only contract between workers."""

from schemas.asr import Transcript, TranscriptPartial, Word
from schemas.audio import (
    PIPELINE_CHANNELS,
    PIPELINE_RATE,
    PIPELINE_WIDTH,
    AudioChunk,
    VoiceStarted,
    VoiceStopped,
)
from schemas.control import ErrorEvent, Interrupt
from schemas.envelope import (
    DLQ_ROOT,
    MAX_PAYLOAD_BYTES,
    SUBJECT_ROOT,
    Event,
    EventDecodeError,
    PayloadEvent,
    decode,
    derive_id,
    dlq_subject,
    encode,
    event_types,
    new_id,
    subject_filter,
    subject_for,
)
from schemas.llm import ReplyDone, ReplySentence, ReplyToken
from schemas.playback import PlaybackDone, PlaybackStarted
from schemas.tts import SentenceSynthesized, SpeechChunk, SpeechDone

__all__ = [
    "DLQ_ROOT",
    "MAX_PAYLOAD_BYTES",
    "PIPELINE_CHANNELS",
    "PIPELINE_RATE",
    "PIPELINE_WIDTH",
    "SUBJECT_ROOT",
    "AudioChunk",
    "ErrorEvent",
    "Event",
    "EventDecodeError",
    "Interrupt",
    "PayloadEvent",
    "PlaybackDone",
    "PlaybackStarted",
    "ReplyDone",
    "ReplySentence",
    "ReplyToken",
    "SentenceSynthesized",
    "SpeechChunk",
    "SpeechDone",
    "Transcript",
    "TranscriptPartial",
    "VoiceStarted",
    "VoiceStopped",
    "Word",
    "decode",
    "derive_id",
    "dlq_subject",
    "encode",
    "event_types",
    "new_id",
    "subject_filter",
    "subject_for",
]
