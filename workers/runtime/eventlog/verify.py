"""Integrity checks of the event log: what `just verify` prints.

Pure reads over an `EventLog`; each check returns `Problem`s, nothing is repaired.

- sequences: per (utterance, type, producer role) the `seq` values are 0..n-1, no gap, no
  two events with the same seq; the counts announced by closing events match
  (`mic.voice-stopped.chunks`, `tts.done.chunks`, `llm.reply-done.sentences`).
- lifecycle: a turn that reached a stage is finished by the next one, or ends with a
  `control.error` (or, after the transcript, a `control.interrupt`). A stage is only
  expected if it took part in the conversation at all (`just transcribe` has no llm).
- projections: the stored `conversations`/`turns` rows equal a rebuild from the events.

The producer *role* ("stt" for "stt-2") is used for sequences because a redelivered input
may be redone by another instance, which re-emits the same derived ids under its own name.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from schemas import EventDecodeError
from workers.runtime.eventlog.store import EventLog, row_event

#: Types whose seq counts from 0 without gaps inside one utterance.
SEQUENCED = (
    "mic.audio-chunk",
    "stt.transcript-partial",
    "llm.reply-token",
    "llm.reply-sentence",
    "tts.audio-chunk",
    "tts.sentence-done",
)
#: (closing type, field, counted type): the closing event announces how many there are.
COUNTS = (
    ("mic.voice-stopped", "chunks", "mic.audio-chunk"),
    ("tts.done", "chunks", "tts.audio-chunk"),
    ("llm.reply-done", "sentences", "llm.reply-sentence"),
)
_FLOAT_TOL = 1e-6


@dataclass(frozen=True)
class Problem:
    conversation_id: str
    utterance_id: str
    check: str
    """"decode", "sequence", "count", "lifecycle" or "projection"."""
    message: str

    def line(self) -> str:
        where = self.conversation_id + (f"/{self.utterance_id}" if self.utterance_id else "")
        return f"{where}: {self.check}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def role_of(producer: str) -> str:
    """ "stt-2" -> "stt": instances of one role share a sequence."""
    return re.sub(r"-\d+$", "", producer)


@dataclass(frozen=True)
class _Ev:
    event_id: str
    type: str
    utterance_id: str
    producer: str
    seq: int
    fields: dict[str, Any]


def _load(log: EventLog, conversation_id: str) -> tuple[list[_Ev], list[Problem]]:
    evs, problems = [], []
    for row in log.event_rows(conversation_id=conversation_id, with_payload=True):
        try:
            e = row_event(row)
        except EventDecodeError as exc:
            problems.append(
                Problem(conversation_id, row.utterance_id, "decode", f"{row.event_id}: {exc}")
            )
            continue
        evs.append(_Ev(e.event_id, e.type, e.utterance_id, e.producer, e.seq, e.model_dump()))
    return evs, problems


def check_sequences(conversation_id: str, evs: Sequence[_Ev]) -> list[Problem]:
    problems: list[Problem] = []
    # Per generation: a turn answered twice (a discarded speculation, then the answer) has
    # two sequences of tokens, sentences and chunks, each from 0.
    groups: dict[tuple[str, str, str, str], list[_Ev]] = defaultdict(list)
    for e in evs:
        if e.type in SEQUENCED:
            gen = str(e.fields.get("generation", ""))
            groups[(e.utterance_id, gen, e.type, role_of(e.producer))].append(e)
    for (utt, _gen, type_, role), group in sorted(groups.items()):
        by_seq: dict[int, list[str]] = defaultdict(list)
        for e in group:
            by_seq[e.seq].append(e.event_id)
        dupes = sorted(s for s, ids in by_seq.items() if len(ids) > 1)
        if dupes:
            problems.append(
                Problem(
                    conversation_id,
                    utt,
                    "sequence",
                    f"{type_} from {role}: seq {_ranges(dupes)} used by more than one event",
                )
            )
        missing = sorted(set(range(max(by_seq) + 1)) - set(by_seq))
        if missing:
            problems.append(
                Problem(
                    conversation_id,
                    utt,
                    "sequence",
                    f"{type_} from {role}: seq {_ranges(missing)} missing "
                    f"(have {len(by_seq)} of 0..{max(by_seq)})",
                )
            )
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for e in evs:
        counts[(e.utterance_id, str(e.fields.get("generation", "")), e.type)] += 1
    for e in evs:
        for closing, field, counted in COUNTS:
            if e.type != closing:
                continue
            key = (e.utterance_id, str(e.fields.get("generation", "")), counted)
            announced, have = int(e.fields[field]), counts[key]
            if announced != have:
                problems.append(
                    Problem(
                        conversation_id,
                        e.utterance_id,
                        "count",
                        f"{closing} says {field}={announced} but the log has {have} {counted}",
                    )
                )
    return problems


def _expectations(turn: list[_Ev], last_stage: str) -> list[tuple[str, str, str, bool]]:
    """(what happened, the event that must follow, its stage, whether an interrupt ends it),
    for a conversation whose turns go as far as `last_stage`."""

    def first(type_: str) -> _Ev | None:
        return next((e for e in turn if e.type == type_), None)

    out = []
    if first("mic.voice-started"):
        out.append(("voice started", "mic.voice-stopped", "mic", False))
    stopped = first("mic.voice-stopped")
    if stopped is not None and stopped.fields.get("reason") != "cancelled":
        out.append(("voice stopped", "stt.transcript", "stt", False))
    transcript = first("stt.transcript")
    answered = last_stage in ("llm", "speaker")
    if answered and transcript is not None and str(transcript.fields.get("text", "")).strip():
        out.append(("transcript", "llm.reply-done", "llm", True))
    if first("llm.reply-started"):
        out.append(("reply started", "llm.reply-done", "llm", False))
    done = first("llm.reply-done")
    spoken = last_stage == "speaker"
    if spoken and done is not None and int(done.fields.get("sentences", 0)) > 0:
        out.append(("reply with sentences", "tts.done", "tts", True))
    if first("tts.started"):
        out.append(("tts started", "tts.done", "tts", False))
        out.append(("tts started", "speaker.playback-done", "speaker", True))
    speech = first("tts.done")
    if speech is not None and int(speech.fields.get("chunks", 0)) > 0:
        out.append(("reply audio", "speaker.playback-done", "speaker", True))
    if first("speaker.playback-started"):
        out.append(("playback started", "speaker.playback-done", "speaker", False))
    return out


def check_lifecycle(conversation_id: str, evs: Sequence[_Ev]) -> list[Problem]:
    stages = {e.type.split(".", 1)[0] for e in evs}
    bound = next((e for e in evs if e.type == "endpoint.conversation-started"), None)
    last_stage = str(bound.fields.get("last_stage", "speaker")) if bound else "speaker"
    by_utt: dict[str, list[_Ev]] = defaultdict(list)
    for e in evs:
        by_utt[e.utterance_id].append(e)
    problems: list[Problem] = []
    for utt, turn in by_utt.items():
        types = {e.type for e in turn}
        if "control.error" in types:
            continue  # the turn ended explicitly, with its cause in the error event
        for what, then, stage, interrupt_ends in _expectations(turn, last_stage):
            if stage not in stages or then in types:
                continue
            if interrupt_ends and types & {"control.interrupt", "llm.reply-discarded"}:
                continue
            problems.append(
                Problem(
                    conversation_id, utt, "lifecycle", f"{what} but no {then} and no control.error"
                )
            )
    return problems


def check_projections(log: EventLog, conversation_id: str) -> list[Problem]:
    problems: list[Problem] = []
    conv, turns = log.rebuild_projections(conversation_id)
    stored_conv = log.conversation(conversation_id)
    if stored_conv is None:
        return [Problem(conversation_id, "", "projection", "no conversations row")]
    for key, diff in _diff(conv, dict(stored_conv._mapping)):
        problems.append(Problem(conversation_id, "", "projection", f"conversation.{key}: {diff}"))
    stored = {r.utterance_id: dict(r._mapping) for r in log.turns(conversation_id)}
    for turn in turns:
        utt = turn["utterance_id"]
        row = stored.pop(utt, None)
        if row is None:
            problems.append(Problem(conversation_id, utt, "projection", "no turns row"))
            continue
        for key, diff in _diff(turn, row):
            problems.append(Problem(conversation_id, utt, "projection", f"turn.{key}: {diff}"))
    for utt in stored:
        problems.append(Problem(conversation_id, utt, "projection", "turns row without events"))
    return problems


def _diff(expected: dict[str, Any], stored: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for key, want in expected.items():
        have = stored.get(key)
        if isinstance(want, float) and isinstance(have, float):
            if math.isclose(want, have, rel_tol=_FLOAT_TOL, abs_tol=_FLOAT_TOL):
                continue
        elif want == have:
            continue
        # Values are not quoted in full: turns hold transcripts and replies.
        yield key, f"stored {_short(have)}, events say {_short(want)}"


def _short(v: Any) -> str:
    if isinstance(v, str):
        return f"<text of {len(v)} chars>" if len(v) > 24 else repr(v)
    return repr(v)


def _ranges(nums: Sequence[int]) -> str:
    out, start, prev = [], nums[0], nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out[:10]) + (" ..." if len(out) > 10 else "")


def verify_conversation(log: EventLog, conversation_id: str) -> list[Problem]:
    evs, problems = _load(log, conversation_id)
    if not evs and not problems:
        return [Problem(conversation_id, "", "missing", "no events for this conversation")]
    problems += check_sequences(conversation_id, evs)
    problems += check_lifecycle(conversation_id, evs)
    problems += check_projections(log, conversation_id)
    return problems


def conversation_ids(log: EventLog) -> list[str]:
    """Every conversation with events or a projection row, oldest first."""
    from sqlalchemy import select, union

    from workers.runtime.eventlog.store import CONVERSATIONS, EVENTS

    q = union(
        select(EVENTS.c.conversation_id).distinct(),
        select(CONVERSATIONS.c.conversation_id),
    )
    with log.engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(q))


def verify(log: EventLog, ids: Sequence[str] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for conv in ids if ids else conversation_ids(log):
        problems += verify_conversation(log, conv)
    return problems
