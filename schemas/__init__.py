"""The event catalogue: the only contract between workers."""

from schemas.control import ControlError, Interrupt
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
from schemas.mic import (
    PIPELINE_CHANNELS,
    PIPELINE_RATE,
    PIPELINE_WIDTH,
    MicAudioChunk,
    VoiceStarted,
    VoiceStopped,
)
from schemas.speaker import PlaybackDone, PlaybackStarted
from schemas.stt import Transcript, TranscriptPartial, Word
from schemas.tts import SentenceDone, TtsAudioChunk, TtsDone

__all__ = [
    "DLQ_ROOT",
    "MAX_PAYLOAD_BYTES",
    "PIPELINE_CHANNELS",
    "PIPELINE_RATE",
    "PIPELINE_WIDTH",
    "SUBJECT_ROOT",
    "ControlError",
    "Event",
    "EventDecodeError",
    "Interrupt",
    "MicAudioChunk",
    "PayloadEvent",
    "PlaybackDone",
    "PlaybackStarted",
    "ReplyDone",
    "ReplySentence",
    "ReplyToken",
    "SentenceDone",
    "Transcript",
    "TranscriptPartial",
    "TtsAudioChunk",
    "TtsDone",
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
