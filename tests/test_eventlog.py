"""The event log's guarantees, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.exc import IntegrityError

import schemas as s
from workers.runtime.eventlog import EventLog, Record, timings
from workers.runtime.eventlog.migrate import check, upgrade


def turn_events(conv: str = "c1", utt: str = "u1", t0: float = 1000.0) -> list[s.Event]:
    b = {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}
    pcm = b"\x05\x00" * 320
    return [
        s.VoiceStarted(**b, ts=t0),
        *[s.MicAudioChunk(**b, seq=i, audio=pcm, ts=t0 + 0.02 * i) for i in range(3)],
        s.VoiceStopped(**b, chunks=3, duration_ms=60, ts=t0 + 0.5, speech_end_ts=t0 + 0.3),
        s.Transcript(**b, text="what time is it", language="en", ts=t0 + 0.6),
        s.ReplyToken(**b, text="It", index=0, ts=t0 + 0.65),
        s.ReplySentence(**b, text="It is noon.", index=0, ts=t0 + 0.7),
        s.TtsAudioChunk(**b, rate=22050, audio=pcm, sentence_index=0, ts=t0 + 0.75),
        s.ReplyDone(**b, text="It is noon.", sentences=1, tokens=3, ts=t0 + 0.8),
        s.TtsDone(**b, sentences=1, chunks=1, audio_ms=900, ts=t0 + 0.85),
        s.PlaybackStarted(**b, ts=t0 + 0.78),
        s.PlaybackDone(**b, played_ms=900, sentences_heard=1, ts=t0 + 1.7),
    ]


@pytest.fixture
def eventlog(db_url: str):  # type: ignore[no-untyped-def]
    log = EventLog(db_url)
    yield log
    log.close()


def test_migrations_upgrade_then_check_on_a_fresh_database(db_url: str) -> None:
    upgrade(db_url)
    check(db_url)  # raises on drift between models and migrations


def test_every_event_is_stored_with_its_payload(eventlog: EventLog) -> None:
    events = turn_events()
    assert eventlog.append([Record.of(e) for e in events]) == len(events)
    assert eventlog.events(conversation_id="c1") == events  # typed, log order, audio intact


def test_a_redelivered_event_is_ignored_and_changes_no_projection(eventlog: EventLog) -> None:
    records = [Record.of(e) for e in turn_events()]
    eventlog.append(records[:6])
    before = dict(eventlog.turn("u1")._mapping)
    # Redelivery after a lost ack: the same events again, some with new ones.
    assert eventlog.append(records[:6]) == 0
    assert dict(eventlog.turn("u1")._mapping) == before
    assert eventlog.append(records) == len(records) - 6
    assert eventlog.count() == len(records)
    assert eventlog.turn("u1").chunks == 3  # chunks counted once
    assert eventlog.conversation("c1").events == len(records)


def test_a_batch_is_atomic(eventlog: EventLog) -> None:
    records = [Record.of(e) for e in turn_events()]
    broken = dataclasses.replace(records[3], envelope=None)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        eventlog.append([*records[:3], broken, *records[4:]])
    assert eventlog.count() == 0
    assert eventlog.turn("u1") is None


def test_projections_hold_the_turn_and_its_timings(eventlog: EventLog) -> None:
    eventlog.append([Record.of(e) for e in turn_events()])
    eventlog.append([Record.of(e) for e in turn_events(utt="u2", t0=2000.0)])
    conv = eventlog.conversation("c1")
    assert conv.turns == 2 and conv.first_words == "what time is it"
    turns = eventlog.turns("c1")
    assert [t.turn_index for t in turns] == [0, 1]
    t = turns[0]
    assert (t.transcript, t.reply_text, t.status) == ("what time is it", "It is noon.", "spoken")
    ms = timings(t).as_dict()
    assert ms["stt_final"] == pytest.approx(100.0)
    assert ms["llm_first_token"] == pytest.approx(50.0)
    assert ms["tts_first_audio"] == pytest.approx(50.0)
    # from the real end of speech (the last voiced frame), not from the end-pointer's decision
    assert ms["endpoint_wait"] == pytest.approx(200.0)
    assert ms["voice_to_voice"] == pytest.approx(480.0)
    assert ms["voice_to_voice_from_endpoint"] == pytest.approx(280.0)


def test_projections_rebuilt_from_events_equal_the_incremental_ones(eventlog: EventLog) -> None:
    events = turn_events() + turn_events(utt="u2", t0=2000.0)
    for i in range(0, len(events), 5):  # several batches
        eventlog.append([Record.of(e) for e in events[i : i + 5]])
    conv, turns = eventlog.rebuild_projections("c1")
    assert conv == dict(eventlog.conversation("c1")._mapping)
    assert turns == [dict(t._mapping) for t in eventlog.turns("c1")]


def test_interrupt_and_error_are_recorded_on_the_turn(eventlog: EventLog) -> None:
    b = {"endpoint": "device", "conversation_id": "c9", "utterance_id": "u9"}
    eventlog.append(
        [
            Record.of(s.Transcript(**b, text="tell me a story")),
            Record.of(s.Interrupt(**b, by_utterance_id="u10")),
            Record.of(s.PlaybackDone(**b, played_ms=450, interrupted=True, sentences_heard=1)),
        ]
    )
    t = eventlog.turn("u9")
    assert (t.status, t.interrupted, t.played_ms) == ("interrupted", True, 450)
    eventlog.append(
        [Record.of(s.ControlError(**b, failed_stage="tts", code="model-missing", message="x"))]
    )
    assert (eventlog.turn("u9").status, eventlog.turn("u9").error_code) == (
        "error",
        "model-missing",
    )


def test_workers_starting_together_migrate_a_fresh_database_once(db_url: str) -> None:
    # Every worker that opens the log migrates it at start; `just up` starts them together.
    # Unserialized, two see an empty version table and the second CREATE TABLE fails.
    import subprocess
    import sys

    code = "import sys; from workers.runtime.eventlog.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [err for p in procs if (err := p.communicate(timeout=120)[1]) and p.returncode]
    assert not errors, errors[0]
    check(db_url)
