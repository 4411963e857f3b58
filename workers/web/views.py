"""What the page reads from the event log: conversations, a turn's waterfall, a conversation
as it was heard, its trace. The log is the record; nothing here needs NATS."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from workers.cli.conversations import summarize
from workers.cli.replay import ReplayError, render_as_heard
from workers.cli.trace import JAEGER_UI, Stage, reconstructed_spans, stages
from workers.runtime.eventlog import EventLog, timings
from workers.runtime.otlp_receiver import jaeger_json


def conversations(log: EventLog, limit: int = 50) -> list[dict[str, Any]]:
    return summarize(log, limit)


def waterfall(turn: Any) -> dict[str, Any]:
    """A turn's stages on one axis (ms from the start of speech) and its timings."""
    st = stages(turn)
    speech_end = turn.speech_end_at or turn.speech_ended_at
    if speech_end is not None and turn.playback_started_at is not None:
        # What the user feels, on the same axis: real end of speech to the first sound.
        st.append(Stage("voice-to-voice", "web", "", speech_end, turn.playback_started_at))
    t0 = min((x.start for x in st), default=0.0)
    jaeger = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) and bool(turn.trace_id)
    return {
        "utterance_id": turn.utterance_id,
        "status": turn.status,
        "transcript": turn.transcript,
        "reply_text": turn.reply_text,
        "played_ms": turn.played_ms,
        "heard_sentences": turn.heard_sentences,
        "interrupted": bool(turn.interrupted),
        "trace_id": turn.trace_id,
        "jaeger_url": f"{JAEGER_UI}/trace/{turn.trace_id}" if jaeger else "",
        "stages": [
            {
                "name": x.name,
                "start_ms": round((x.start - t0) * 1000, 1),
                "duration_ms": round((x.end - x.start) * 1000, 1),
                "mark_ms": None if x.mark is None else round((x.mark - t0) * 1000, 1),
                "mark_label": x.mark_label,
            }
            for x in st
        ],
        "timings_ms": timings(turn).as_dict(),
    }


def turns(log: EventLog, conversation_id: str) -> list[dict[str, Any]]:
    return [waterfall(t) for t in log.turns(conversation_id, with_resumed=False)]


def heard_wav(log: EventLog, conversation_id: str) -> bytes:
    """The conversation on its recorded clock, stereo (you left, replies right)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, _, _ = render_as_heard(log, conversation_id, Path(tmp) / "heard.wav")
        return path.read_bytes()


def trace_json(log: EventLog, conversation_id: str) -> dict[str, Any]:
    """Jaeger UI JSON of the conversation's turns, reconstructed from the events."""
    spans = [sp for t in log.turns(conversation_id) for sp in reconstructed_spans(log, t)]
    return jaeger_json(spans)


__all__ = ["ReplayError", "conversations", "heard_wav", "trace_json", "turns", "waterfall"]
