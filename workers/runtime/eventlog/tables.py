"""The event log's tables (SQLModel): every event, plus projections a user reads.

`events` is the record: one row per event, payload included, unique on event_id, `id` giving
the log order. `conversations` and `turns` are projections, derived from events only (see
projections.py) and rebuildable from them at any time.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_turn", "conversation_id", "utterance_id", "id"),
        Index("ix_events_type", "type"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True, nullable=False)
    type: str = Field(max_length=64)
    conversation_id: str = Field(max_length=64)
    utterance_id: str = Field(max_length=64)
    producer: str = Field(default="", max_length=64)
    seq: int = 0
    ts: float
    """Producer's wall clock, Unix seconds."""
    schema_version: int = 1
    subject: str = Field(default="", max_length=256)
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    """The JSON envelope line exactly as received (schemas.encode without the payload)."""
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """Binary payload (raw PCM) of audio events."""
    traceparent: str = Field(default="", max_length=64)
    stream_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    """JetStream stream sequence (0 if unknown)."""
    recorded_at: float
    """Recorder's wall clock at commit time, Unix seconds."""


class ConversationRow(SQLModel, table=True):
    __tablename__ = "conversations"

    conversation_id: str = Field(primary_key=True, max_length=64)
    endpoint: str = Field(default="", max_length=130)
    """Where it is spoken and heard, as people read it ("device", "web:3f2a")."""
    medium: str = Field(default="", max_length=16)
    """device, file, web, wyoming or text."""
    last_stage: str = Field(default="", max_length=16)
    """How far its turns go: stt, llm or speaker ("" before bindings existed)."""
    replay_of: str = Field(default="", max_length=64)
    started_at: float
    last_event_at: float
    turns: int = 0
    first_words: str = Field(default="", max_length=200)
    events: int = 0


class TurnRow(SQLModel, table=True):
    """One turn: the user's utterance and the reply to it, with per-stage timestamps."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_conversation", "conversation_id", "turn_index"),)

    utterance_id: str = Field(primary_key=True, max_length=64)
    conversation_id: str = Field(max_length=64)
    turn_index: int = 0
    status: str = Field(default="listening", max_length=32)
    """listening, transcribed, replying, synthesized, spoken, interrupted or error."""
    source: str = Field(default="", max_length=256)
    trace_id: str = Field(default="", max_length=32)
    speech_started_at: float | None = None
    speech_end_at: float | None = None
    """When the user's speech really ended (last voiced frame), Unix seconds."""
    speech_ended_at: float | None = None
    """When the end-pointer decided the utterance was over (mic.voice-stopped)."""
    audio_ms: float = 0.0
    chunks: int = 0
    transcript: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    language: str = Field(default="", max_length=16)
    stt_first_partial_at: float | None = None
    stt_final_at: float | None = None
    generation: str = Field(default="", max_length=64)
    """The generation of the reply the row describes (the transcript id it answers)."""
    speculations: int = 0
    """Answers started speculatively, before the end-pointer decided."""
    speculation: str = Field(default="", max_length=16)
    """"committed" (the answer began during the end-pointer's wait and was the one heard),
    "discarded" (a speculation was thrown away), or ""."""
    llm_first_token_at: float | None = None
    llm_first_sentence_at: float | None = None
    llm_done_at: float | None = None
    reply_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    finish_reason: str = Field(default="", max_length=16)
    tts_first_audio_at: float | None = None
    tts_done_at: float | None = None
    playback_started_at: float | None = None
    playback_done_at: float | None = None
    played_ms: float = 0.0
    interrupted: bool = False
    heard_sentences: int = 0
    reply_wav: str = Field(default="", max_length=1024)
    error_code: str = Field(default="", max_length=64)
    error_message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
