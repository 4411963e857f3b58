"""The event catalogue: the only contract between workers."""

from schemas.control import ControlError, Interrupt
from schemas.endpoint import ConversationStarted, LastStage, binding
from schemas.envelope import (
    DLQ_ROOT,
    LEGACY_ENDPOINT,
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
    subject_parts,
    upcaster,
)
from schemas.llm import ReplyDone, ReplySentence, ReplyStarted, ReplyToken
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
from schemas.tts import SentenceDone, TtsAudioChunk, TtsDone, TtsStarted

__all__ = [
    "DLQ_ROOT",
    "LEGACY_ENDPOINT",
    "MAX_PAYLOAD_BYTES",
    "PIPELINE_CHANNELS",
    "PIPELINE_RATE",
    "PIPELINE_WIDTH",
    "SUBJECT_ROOT",
    "ControlError",
    "ConversationStarted",
    "Event",
    "EventDecodeError",
    "Interrupt",
    "LastStage",
    "MicAudioChunk",
    "PayloadEvent",
    "PlaybackDone",
    "PlaybackStarted",
    "ReplyDone",
    "ReplySentence",
    "ReplyStarted",
    "ReplyToken",
    "SentenceDone",
    "Transcript",
    "TranscriptPartial",
    "TtsAudioChunk",
    "TtsDone",
    "TtsStarted",
    "VoiceStarted",
    "VoiceStopped",
    "Word",
    "binding",
    "decode",
    "derive_id",
    "dlq_subject",
    "encode",
    "event_types",
    "new_id",
    "subject_filter",
    "subject_for",
    "subject_parts",
    "upcaster",
]
