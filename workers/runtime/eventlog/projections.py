"""Projections: what a user reads (conversations, turns with timings), derived from events.

`apply` is a pure function of (event, current rows) so the recorder can update projections
incrementally and `rebuild` can recompute them from the events table to check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import (
    ControlError,
    ConversationStarted,
    Event,
    Interrupt,
    MicAudioChunk,
    OfGeneration,
    PlaybackDone,
    PlaybackStarted,
    ReplyCommitted,
    ReplyDiscarded,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    ReplyToken,
    Transcript,
    TranscriptPartial,
    TtsAudioChunk,
    TtsDone,
    VoiceStarted,
    VoiceStopped,
)

_RANK = {
    "listening": 0,
    "transcribed": 1,
    "replying": 2,
    "synthesized": 3,
    "spoken": 4,
    "interrupted": 5,
    "error": 6,
    "resumed": 7,
}


def _status(row: dict[str, Any], status: str) -> None:
    if _RANK[status] >= _RANK.get(row.get("status") or "listening", 0):
        row["status"] = status


def _first(row: dict[str, Any], key: str, ts: float) -> None:
    if row.get(key) is None or ts < row[key]:
        row[key] = ts


def new_turn(event: Event, turn_index: int) -> dict[str, Any]:
    return {
        "utterance_id": event.utterance_id,
        "conversation_id": event.conversation_id,
        "turn_index": turn_index,
        "status": "listening",
        "source": "",
        "trace_id": "",
        "speech_started_at": None,
        "speech_end_at": None,
        "speech_ended_at": None,
        "audio_ms": 0.0,
        "chunks": 0,
        "transcript": "",
        "language": "",
        "stt_first_partial_at": None,
        "stt_final_at": None,
        "generation": "",
        "speculations": 0,
        "speculation": "",
        "llm_first_token_at": None,
        "llm_first_sentence_at": None,
        "llm_done_at": None,
        "reply_text": "",
        "finish_reason": "",
        "tts_first_audio_at": None,
        "tts_done_at": None,
        "playback_started_at": None,
        "playback_done_at": None,
        "played_ms": 0.0,
        "interrupted": False,
        "heard_sentences": 0,
        "reply_wav": "",
        "error_code": "",
        "error_message": "",
    }


def new_conversation(event: Event) -> dict[str, Any]:
    return {
        "conversation_id": event.conversation_id,
        "endpoint": event.endpoint,
        "medium": "",
        "last_stage": "",
        "replay_of": "",
        "started_at": event.ts,
        "last_event_at": event.ts,
        "turns": 0,
        "first_words": "",
        "events": 0,
    }


#: What a new generation of the reply resets: the row describes one generation's answer.
_REPLY_FIELDS = {
    "llm_first_token_at": None,
    "llm_first_sentence_at": None,
    "llm_done_at": None,
    "reply_text": "",
    "finish_reason": "",
    "tts_first_audio_at": None,
    "tts_done_at": None,
}
#: A discarded generation's id in the row: none of its late events match it any more.
_DISCARDED = "-discarded-"


def _generation(row: dict[str, Any], e: Event) -> bool:
    """Whether `e` belongs to the generation the row describes (and follow a new one)."""
    if isinstance(e, ReplyStarted):
        if e.generation != row["generation"]:
            row["generation"] = e.generation
            row.update(_REPLY_FIELDS)
        if e.speculative:
            row["speculations"] += 1
        return True
    if isinstance(e, ReplyDiscarded):
        if e.reason == "resumed":
            _status(row, "resumed")  # a pause: the turn goes on in a later utterance
        if e.generation == row["generation"]:
            row["generation"] = _DISCARDED
            row.update(_REPLY_FIELDS)
        if row["speculation"] != "committed" and e.reason != "abandoned":
            row["speculation"] = "discarded"
        return False
    if isinstance(e, ReplyCommitted):
        row["speculation"] = "committed"
        return False
    return not isinstance(e, OfGeneration) or e.generation == row["generation"]


def apply_turn(row: dict[str, Any], e: Event, trace_id: str = "") -> None:
    """Fold one event into its turn row (in place). A turn may be answered more than once
    (a speculation discarded, then the real answer): the row follows the generation of the
    last reply-started, and events of other generations leave it alone."""
    if trace_id and not row["trace_id"]:
        row["trace_id"] = trace_id
    if not _generation(row, e):
        return
    match e:
        case VoiceStarted():
            row["speech_started_at"] = e.ts
            row["source"] = e.source[-256:]
        case MicAudioChunk():
            row["chunks"] += 1
        case VoiceStopped():
            row["speech_end_at"] = e.speech_end_ts
            row["speech_ended_at"] = e.ts
            row["audio_ms"] = e.duration_ms
        case TranscriptPartial():
            _first(row, "stt_first_partial_at", e.ts)
        case Transcript() if not e.speculative:
            row["transcript"] = e.text
            row["language"] = e.language[:16]
            row["stt_final_at"] = e.ts
            _status(row, "transcribed")
        case ReplyToken():
            _first(row, "llm_first_token_at", e.ts)
        case ReplySentence():
            _first(row, "llm_first_sentence_at", e.ts)
            _status(row, "replying")
        case ReplyDone():
            row["reply_text"] = e.text
            row["finish_reason"] = e.finish_reason
            row["llm_done_at"] = e.ts
            if e.finish_reason == "resumed":
                _status(row, "resumed")  # a pause: the turn goes on in a later utterance
            elif e.interrupted:
                row["interrupted"] = True
                _status(row, "interrupted")
            else:
                _status(row, "replying")
        case TtsAudioChunk():
            _first(row, "tts_first_audio_at", e.ts)
        case TtsDone():
            row["tts_done_at"] = e.ts
            _status(row, "interrupted" if e.interrupted else "synthesized")
        case PlaybackStarted():
            _first(row, "playback_started_at", e.ts)
        case PlaybackDone():
            row["playback_done_at"] = e.ts
            row["played_ms"] = e.played_ms
            row["heard_sentences"] = e.sentences_heard
            row["reply_wav"] = e.wav[-1024:]
            if e.interrupted:
                row["interrupted"] = True
            _status(row, "interrupted" if e.interrupted else "spoken")
        case Interrupt():
            row["interrupted"] = True
            _status(row, "interrupted")
        case ControlError():
            row["error_code"] = e.code
            row["error_message"] = e.message
            _status(row, "error")


def apply_conversation(row: dict[str, Any], e: Event) -> None:
    row["events"] += 1
    if isinstance(e, ConversationStarted):
        row["endpoint"] = e.label[:130]
        row["medium"] = e.medium
        row["last_stage"] = e.last_stage
        row["replay_of"] = e.replay_of
    row["started_at"] = min(row["started_at"], e.ts)
    row["last_event_at"] = max(row["last_event_at"], e.ts)
    if (
        isinstance(e, Transcript)
        and not e.speculative
        and not row["first_words"]
        and e.text.strip()
    ):
        row["first_words"] = " ".join(e.text.split()[:8])[:200]


@dataclass(frozen=True)
class Timings:
    """Per-stage latencies of a turn, milliseconds (None when the stage did not happen).

    `voice_to_voice` is what the user waits: from the real end of their speech (the last
    voiced frame, captured before the end-pointer's wait) to the first sample of the reply
    played at the endpoint. `endpoint_wait` is the part of it spent deciding that the turn
    was over; `voice_to_voice_from_endpoint` leaves that wait out (labelled, never the
    headline)."""

    endpoint_wait: float | None
    """Real end of speech to the end-pointer's decision (mic.voice-stopped)."""
    stt_final: float | None
    """End-pointer's decision to the final transcript."""
    llm_first_token: float | None
    """Final transcript to first reply token."""
    llm_first_sentence: float | None
    """Final transcript to first speakable sentence."""
    tts_first_audio: float | None
    """First sentence to first synthesized audio."""
    playback_start: float | None
    """First synthesized audio to first sample played."""
    voice_to_voice: float | None
    """Real end of the user's speech to the first audio of the reply heard."""
    voice_to_voice_from_endpoint: float | None
    """The same from the end-pointer's decision (leaves the endpoint wait out)."""

    def as_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 1) if v is not None else None) for k, v in self.__dict__.items()}


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000.0


def timings(turn: Any) -> Timings:
    """Timings of a turn row (mapping or TurnRow)."""
    g = turn.get if isinstance(turn, dict) else lambda k: getattr(turn, k)
    first_audio = g("playback_started_at") or g("tts_first_audio_at")
    speech_end = g("speech_end_at") or g("speech_ended_at")
    return Timings(
        endpoint_wait=_ms(speech_end, g("speech_ended_at")),
        stt_final=_ms(g("speech_ended_at"), g("stt_final_at")),
        llm_first_token=_ms(g("stt_final_at"), g("llm_first_token_at")),
        llm_first_sentence=_ms(g("stt_final_at"), g("llm_first_sentence_at")),
        tts_first_audio=_ms(g("llm_first_sentence_at"), g("tts_first_audio_at")),
        playback_start=_ms(g("tts_first_audio_at"), g("playback_started_at")),
        voice_to_voice=_ms(speech_end, first_audio),
        voice_to_voice_from_endpoint=_ms(g("speech_ended_at"), first_audio),
    )
