"""`just trace ID [--turn N] [--export-jaeger FILE.json] [--json]`: where a turn's time went.

Prints an ASCII waterfall per turn of conversation ID, read from the event log (no Jaeger
needed): the user speaking, stt (end of speech to final transcript), llm (transcript to
reply done; `*` = first token), tts (first sentence to synthesis done; `*` = first audio)
and playback, with millisecond offsets from the start of speech. When
OTEL_EXPORTER_OTLP_ENDPOINT is set, each turn also gets a link to its trace in the Jaeger UI
(JAEGER_UI_URL, default http://127.0.0.1:16686).

--export-jaeger writes the turns (or only turn N) as a JSON file that Jaeger's UI opens under
"Search -> JSON File", for machines without a running Jaeger. The event log holds events,
not spans: the spans in that file are RECONSTRUCTED FROM THE EVENTS' TIMESTAMPS, one per
stage, all children of the turn's root. They use the turn's real trace id and, as root, the
real span id of the microphone's "utterance" span (both read from the events' traceparent),
so they line up with what the workers exported to Jaeger live; the stage span ids are
derived. Timestamps are each producer's wall clock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from workers.runtime.config import get_settings
from workers.runtime.eventlog import EventLog, timings
from workers.runtime.otlp_receiver import ReceivedSpan, jaeger_json

JAEGER_UI = os.environ.get("JAEGER_UI_URL", "http://127.0.0.1:16686")
WIDTH = 100
LABEL = 10
NUMBERS = 24
BAR = WIDTH - LABEL - NUMBERS - 2
SHORT = {
    "endpoint_wait": "turn wait",
    "stt_final": "stt",
    "llm_first_token": "1st token",
    "llm_first_sentence": "1st sentence",
    "tts_first_audio": "1st audio",
    "playback_start": "play",
    "voice_to_voice": "voice-to-voice",
    "voice_to_voice_from_endpoint": "(from endpoint)",
}


@dataclass(frozen=True)
class Stage:
    """One bar of the waterfall / one reconstructed span (Unix seconds)."""

    name: str
    service: str
    span_name: str
    start: float
    end: float
    mark: float | None = None
    """A milestone inside the bar (first token, first audio)."""
    mark_label: str = ""


def stages(turn: Any) -> list[Stage]:
    """The stages of a turn row that happened (both ends known), in pipeline order."""
    t = turn
    first_audio = t.tts_first_audio_at
    speech_end = t.speech_end_at or t.speech_ended_at
    candidates = [
        ("speaking", "mic", "utterance", t.speech_started_at, speech_end, None, ""),
        ("turn wait", "mic", "endpoint.wait", speech_end, t.speech_ended_at, None, ""),
        ("stt final", "stt", "stt.final", t.speech_ended_at, t.stt_final_at, None, ""),
        (
            "llm",
            "llm",
            "llm.generate",
            t.stt_final_at,
            t.llm_done_at,
            t.llm_first_token_at,
            "first token",
        ),
        (
            "tts",
            "tts",
            "tts.synthesize",
            t.llm_first_sentence_at,
            t.tts_done_at,
            first_audio,
            "first audio",
        ),
        (
            "playback",
            "speaker",
            "speaker.playback",
            t.playback_started_at,
            t.playback_done_at,
            None,
            "",
        ),
    ]
    return [
        Stage(name, svc, span, a, max(a, b), mark, label)
        for name, svc, span, a, b, mark, label in candidates
        if a is not None and b is not None
    ]


def waterfall(turn: Any, index: int) -> list[str]:
    st = stages(turn)
    head = f"turn {index}  {turn.utterance_id}  status {turn.status}"
    if turn.trace_id:
        head += f"  trace {turn.trace_id}"
    lines = [head[:WIDTH]]
    if turn.trace_id and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        lines.append(f"  in Jaeger: {JAEGER_UI}/trace/{turn.trace_id}"[:WIDTH])
    words = (turn.transcript or "").strip()
    if words:
        lines.append(f"  you: {words}"[:WIDTH])
    if not st:
        lines.append("  (no timed stages: the turn has no events with both ends)")
        return lines
    t0 = min(s.start for s in st)
    span = max(max(s.end for s in st) - t0, 1e-3)

    def col(ts: float) -> int:
        return min(BAR - 1, round((ts - t0) / span * (BAR - 1)))

    for s in st:
        a, b = col(s.start), col(s.end)
        bar = [" "] * BAR
        for i in range(a, b + 1):
            bar[i] = "="
        if s.mark is not None and s.start <= s.mark <= s.end:
            bar[col(s.mark)] = "*"
        start_ms, dur_ms = (s.start - t0) * 1000, (s.end - s.start) * 1000
        nums = f"{start_ms:7.0f} +{dur_ms:6.0f} ms"
        lines.append(f"{s.name:<{LABEL}}|{''.join(bar)}| {nums:>{NUMBERS - 1}}")
    ms = timings(turn).as_dict()
    parts = [f"{SHORT[k]} {v:.0f}" for k, v in ms.items() if v is not None]
    lines.append(("  ms " + " | ".join(parts))[:WIDTH])
    return lines


def _span_id(utterance_id: str, stage: str) -> str:
    return hashlib.sha256(f"{utterance_id}/{stage}".encode()).hexdigest()[:16]


def root_context(log: EventLog, turn: Any) -> tuple[str, str]:
    """(trace id, span id) of the mic's utterance span, from its events' traceparent."""
    for row in log.event_rows(
        utterance_id=turn.utterance_id, types=["mic.voice-started"], with_payload=False
    ):
        parts = (row.traceparent or "").split("-")
        if len(parts) >= 4:
            return parts[1], parts[2]
    # A turn without microphone (typed with `just ask`): keep the trace id, invent a root.
    trace_id = turn.trace_id or hashlib.md5(turn.utterance_id.encode()).hexdigest()
    return trace_id, _span_id(turn.utterance_id, "root")


def reconstructed_spans(log: EventLog, turn: Any) -> list[ReceivedSpan]:
    """One span per stage of a turn, rebuilt from event timestamps (see the module doc)."""
    trace_id, root_id = root_context(log, turn)
    st = stages(turn)
    ms = timings(turn).as_dict()
    common = {
        "voice.conversation_id": turn.conversation_id,
        "voice.utterance_id": turn.utterance_id,
        "reconstructed_from": "event log",
    }
    spans = []
    has_root = any(s.span_name == "utterance" for s in st)
    if not has_root:  # no speech in this turn: a root spanning everything keeps one tree
        t0, t1 = min(s.start for s in st), max(s.end for s in st)
        st.insert(0, Stage("turn", "cli", "utterance", t0, t1))
    for s in st:
        is_root = s.span_name == "utterance"
        attrs: dict[str, Any] = dict(common)
        if s.name == "stt final":
            attrs["stt.final_latency_ms"] = ms["stt_final"]
        elif s.name == "llm":
            attrs["llm.first_token_ms"] = ms["llm_first_token"]
            attrs["llm.first_sentence_ms"] = ms["llm_first_sentence"]
        elif s.name == "tts":
            attrs["tts.first_audio_ms"] = ms["tts_first_audio"]
        elif s.name == "playback":
            attrs["speaker.playback_start_ms"] = ms["playback_start"]
            attrs["speaker.played_ms"] = turn.played_ms
        elif is_root:
            attrs["voice_to_voice_ms"] = ms["voice_to_voice"]
            attrs["endpoint_wait_ms"] = ms["endpoint_wait"]
            attrs["audio_ms"] = turn.audio_ms
        spans.append(
            ReceivedSpan(
                trace_id=trace_id,
                span_id=root_id if is_root else _span_id(turn.utterance_id, s.name),
                parent_span_id="" if is_root else root_id,
                name=s.span_name,
                service=s.service,
                start_ns=int(s.start * 1e9),
                end_ns=int(s.end * 1e9),
                attributes={k: v for k, v in attrs.items() if v is not None},
            )
        )
    return spans


def pick_turns(turns: list[Any], n: int | None) -> list[tuple[int, Any]]:
    numbered = list(enumerate(turns, 1))
    if n is None:
        return numbered
    if not 1 <= n <= len(turns):
        raise ValueError(f"--turn {n}: the conversation has {len(turns)} turn(s)")
    return [numbered[n - 1]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just trace", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("conversation", help="conversation id (see: just conversations)")
    p.add_argument("--turn", type=int, default=None, help="only turn N (1 = first)")
    p.add_argument(
        "--export-jaeger", metavar="FILE.json", help="write the spans as a Jaeger UI JSON file"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    args = p.parse_args(argv)
    settings = get_settings()
    try:
        log = EventLog(settings.db_url)
    except SQLAlchemyError as exc:
        print(f"trace: error: reading {settings.db_url}: {exc}", file=sys.stderr)
        return 1
    try:
        if log.conversation(args.conversation) is None:
            print(f"trace: error: no conversation {args.conversation!r}", file=sys.stderr)
            return 1
        try:
            chosen = pick_turns(log.turns(args.conversation), args.turn)
        except ValueError as exc:
            print(f"trace: error: {exc}", file=sys.stderr)
            return 1
        out = sys.stderr if args.json else sys.stdout
        print(f"conversation {args.conversation}", file=out)
        for i, turn in chosen:
            print("", file=out)
            print("\n".join(waterfall(turn, i)), file=out)
        spans = [sp for _, turn in chosen for sp in reconstructed_spans(log, turn)]
    finally:
        log.close()
    if args.export_jaeger:
        path = Path(args.export_jaeger)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(jaeger_json(spans), indent=1))
        except OSError as exc:
            print(f"trace: error: writing {path}: {exc}", file=sys.stderr)
            return 1
        print(f"\nJaeger JSON ({len(spans)} spans, reconstructed from events): {path}", file=out)
    if args.json:
        print(
            json.dumps(
                {
                    "conversation_id": args.conversation,
                    "turns": [
                        {
                            "turn": i,
                            "utterance_id": t.utterance_id,
                            "trace_id": t.trace_id,
                            "timings_ms": timings(t).as_dict(),
                            "stages": [
                                {"stage": s.name, "start": s.start, "end": s.end} for s in stages(t)
                            ],
                        }
                        for i, t in chosen
                    ],
                    "export": args.export_jaeger or "",
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
