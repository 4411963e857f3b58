"""Fault checks shared by the chaos test and the load bench.

`quiescent(bus)` waits until every durable consumer has nothing pending or unacknowledged
(the pipeline has absorbed everything, redeliveries included). `audit(log)` reads the event
log and lists what a crash must never leave behind: a started turn that neither finished
nor ended with an error, a logical event emitted twice under different ids, a gap in a chunk
or token sequence.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from typing import Any

import nats.errors

from schemas import subject_filter
from workers.runtime.bus import DLQ_STREAM, Bus
from workers.runtime.eventlog import EventLog, row_event

#: Types whose seq numbers one logical stream per utterance (0..n-1, no gaps, no doubles).
SEQUENCED = ("mic.audio-chunk", "tts.audio-chunk", "llm.reply-token", "llm.reply-sentence")
#: Events that end a turn.
ENDINGS = ("speaker.playback-done", "control.error")


@dataclass
class ConsumerState:
    pending: int
    ack_pending: int
    redelivered: int


async def consumer_states(bus: Bus) -> dict[str, ConsumerState]:
    infos = await bus.js.consumers_info(bus.stream)
    return {
        i.name: ConsumerState(i.num_pending or 0, i.num_ack_pending or 0, i.num_redelivered or 0)
        for i in infos
        if i.config.durable_name
    }


async def quiescent(bus: Bus, timeout: float = 60.0, settle: int = 3) -> dict[str, ConsumerState]:
    """Wait until all durables are drained `settle` polls in a row; their final state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    states: dict[str, ConsumerState] = {}
    while loop.time() < deadline:
        try:
            states = await consumer_states(bus)
        except (nats.errors.Error, TimeoutError):
            calm = 0
        else:
            busy = any(c.pending or c.ack_pending for c in states.values())
            calm = 0 if busy else calm + 1
            if calm >= settle:
                return states
        await asyncio.sleep(0.25)
    raise TimeoutError(f"consumers not drained after {timeout:.0f} s: {states}")


async def dead_letters(bus: Bus) -> int:
    try:
        info = await bus.js.stream_info(DLQ_STREAM)
    except nats.errors.Error:
        return 0
    return int(info.state.messages)


async def stream_counts(bus: Bus, event_type: str) -> int:
    """Messages of one type in the stream (what was published, after Msg-Id de-duplication)."""
    subject = subject_filter("*", "*", event_type)
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


@dataclass
class Audit:
    turns: int = 0
    completed: int = 0
    failed: int = 0
    """Turns ended by a control.error (one turn may carry several)."""
    errors: dict[str, int] = field(default_factory=dict)
    """control.error code -> turns it ended."""
    events: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "completed": self.completed,
            "failed": self.failed,
            "errors": self.errors,
            "events": self.events,
            "problems": self.problems,
        }


def audit(log: EventLog, conversation_id: str | None = None) -> Audit:
    """Check every turn that started (mic.voice-started) in the log."""
    rows = log.event_rows(conversation_id=conversation_id, with_payload=False)
    a = Audit(events=len(rows))
    by_utt: dict[str, list[Any]] = collections.defaultdict(list)
    for r in rows:
        by_utt[r.utterance_id].append(r)
    for utt, evs in by_utt.items():
        types = collections.Counter(r.type for r in evs)
        if not types["mic.voice-started"]:
            continue
        a.turns += 1
        _check_ending(a, utt, evs, types)
        _check_sequences(a, utt, evs)
    return a


def _check_ending(a: Audit, utt: str, evs: list[Any], types: collections.Counter) -> None:
    errors = [row_event(r) for r in evs if r.type == "control.error"]
    final = [e for e in errors if not e.retryable]  # type: ignore[attr-defined]
    if types["speaker.playback-done"]:
        a.completed += 1
    elif final:
        a.failed += 1
        for code in {e.code for e in final}:  # type: ignore[attr-defined]
            a.errors[code] = a.errors.get(code, 0) + 1
        for e in final:
            if not e.code or not e.failed_stage:  # type: ignore[attr-defined]
                a.problems.append(f"{utt}: control.error without a code or stage")
    else:
        last = evs[-1].type
        a.problems.append(f"{utt}: turn neither finished nor failed (last event {last})")
    if types["speaker.playback-done"] > 1:
        a.problems.append(f"{utt}: {types['speaker.playback-done']} playback-done events")


def _generation(r: Any) -> str:
    """The reply generation of an events row ("" for events outside a reply)."""
    return str(json.loads(r.envelope).get("generation", ""))


def _check_sequences(a: Audit, utt: str, evs: list[Any]) -> None:
    # Per generation: a turn answered again (a speculation, a reply abandoned by a dead llm)
    # numbers its tokens, sentences and audio from 0 under its own generation.
    for t in SEQUENCED:
        by_gen: dict[str, dict[int, set[str]]] = collections.defaultdict(
            lambda: collections.defaultdict(set)
        )
        for r in evs:
            if r.type == t:
                by_gen[_generation(r)][r.seq].add(r.event_id)
        for gen, seqs in by_gen.items():
            label = f"{t}{f' (generation {gen[:8]})' if gen else ''}"
            doubled = sorted(q for q, ids in seqs.items() if len(ids) > 1)
            if doubled:
                a.problems.append(
                    f"{utt}: {label} seq {doubled[:5]} emitted twice under different ids "
                    "(not idempotent)"
                )
            if seqs and sorted(seqs) != list(range(len(seqs))):
                missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
                a.problems.append(
                    f"{utt}: {label} seq gap, missing {missing[:10]} of 0..{max(seqs)}"
                )
    stopped = [row_event(r) for r in evs if r.type == "mic.voice-stopped"]
    mic = sum(1 for r in evs if r.type == "mic.audio-chunk")
    for v in stopped:
        if v.chunks != mic:  # type: ignore[attr-defined]
            a.problems.append(f"{utt}: voice-stopped says {v.chunks} chunks, log has {mic}")  # type: ignore[attr-defined]
    for r in evs:
        if r.type != "tts.done":
            continue
        d = row_event(r)
        gen = _generation(r)
        tts = sum(1 for c in evs if c.type == "tts.audio-chunk" and _generation(c) == gen)
        if not d.interrupted and d.chunks != tts:  # type: ignore[attr-defined]
            a.problems.append(f"{utt}: tts.done says {d.chunks} chunks, log has {tts}")  # type: ignore[attr-defined]
