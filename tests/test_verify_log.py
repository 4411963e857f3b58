"""`just verify`: a clean log passes; every kind of damage is named on its own line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, update

import schemas as s
from workers.cli import verify as verify_cli
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.eventlog.store import EVENTS, TURNS
from workers.runtime.eventlog.verify import verify

CONV, UTT = "conv-1", "utt-1"


def full_turn(conv: str = CONV, utt: str = UTT, chunks: int = 3) -> list[s.Event]:
    pcm = b"\x00\x00" * 160
    base = {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}
    evs: list[s.Event] = [s.VoiceStarted(**base, producer="mic")]
    evs += [s.MicAudioChunk(**base, producer="mic", seq=i, audio=pcm) for i in range(chunks)]
    evs += [
        s.VoiceStopped(**base, producer="mic", chunks=chunks, duration_ms=30.0, speech_end_ts=0),
        s.TranscriptPartial(**base, producer="stt-1", text="hel", audio_ms=10.0),
        s.Transcript(**base, producer="stt-2", text="hello there"),
        s.ReplyToken(**base, producer="llm", text="Hi", index=0),
        s.ReplySentence(**base, producer="llm", text="Hi.", index=0),
        s.ReplyDone(**base, producer="llm", text="Hi.", sentences=1, tokens=1),
        s.TtsAudioChunk(**base, producer="tts", rate=22050, sentence_index=0, audio=pcm),
        s.TtsAudioChunk(**base, producer="tts", rate=22050, sentence_index=0, seq=1, audio=pcm),
        s.SentenceDone(**base, producer="tts", sentence_index=0, text="Hi.", audio_ms=7),
        s.TtsDone(**base, producer="tts", sentences=1, chunks=2, audio_ms=7.0),
        s.PlaybackStarted(**base, producer="speaker"),
        s.PlaybackDone(**base, producer="speaker", played_ms=7.0, sentences_heard=1),
    ]
    return evs


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    log = EventLog(f"sqlite:///{tmp_path / 'v.db'}")
    log.append([Record.of(e) for e in full_turn()])
    log.append([Record.of(e) for e in full_turn("conv-2", "utt-2")])
    yield log
    log.close()


def messages(log: EventLog) -> list[str]:
    return [p.line() for p in verify(log)]


def test_a_complete_turn_verifies_clean(log: EventLog) -> None:
    assert messages(log) == []


def test_a_lost_audio_chunk_is_a_gap_and_a_count_mismatch(log: EventLog) -> None:
    with log.engine.begin() as c:
        c.execute(
            delete(EVENTS).where(
                EVENTS.c.conversation_id == CONV,
                EVENTS.c.type == "mic.audio-chunk",
                EVENTS.c.seq == 1,
            )
        )
    out = "\n".join(messages(log))
    assert "mic.audio-chunk from mic: seq 1 missing" in out
    assert "mic.voice-stopped says chunks=3 but the log has 2 mic.audio-chunk" in out
    assert "turn.chunks: stored 3, events say 2" in out  # projection no longer matches
    assert "conv-2" not in out


def test_two_events_with_one_seq_are_reported(log: EventLog) -> None:
    pcm = b"\x00\x00" * 10
    dup = s.MicAudioChunk(
        endpoint="device",
        conversation_id=CONV,
        utterance_id=UTT,
        producer="mic-2",
        seq=2,
        audio=pcm,
    )
    log.append([Record.of(dup)])
    out = "\n".join(messages(log))
    assert "mic.audio-chunk from mic: seq 2 used by more than one event" in out


def test_a_transcript_without_reply_or_error_is_an_unfinished_turn(log: EventLog) -> None:
    with log.engine.begin() as c:
        c.execute(
            delete(EVENTS).where(
                EVENTS.c.conversation_id == CONV, EVENTS.c.type == "llm.reply-done"
            )
        )
    out = messages(log)
    assert any("transcript but no llm.reply-done and no control.error" in m for m in out)


def test_an_error_event_ends_a_turn_explicitly(tmp_path: Path) -> None:
    log = EventLog(f"sqlite:///{tmp_path / 'e.db'}")
    evs = [e for e in full_turn() if not e.type.startswith(("llm.", "tts.", "speaker."))]
    log.append([Record.of(e) for e in evs])
    # The other stages took part in another turn, so they are expected here too ...
    log.append([Record.of(e) for e in full_turn(utt="utt-9")])
    assert any("no llm.reply-done" in m for m in messages(log))
    err = s.ControlError(
        endpoint="device",
        conversation_id=CONV,
        utterance_id=UTT,
        failed_stage="llm",
        code="x",
        message="boom",
    )
    log.append([Record.of(err)])
    assert messages(log) == []  # ... until the turn ends with an explicit error
    log.close()


def test_a_projection_that_drifted_from_the_events_is_reported(log: EventLog) -> None:
    with log.engine.begin() as c:
        c.execute(update(TURNS).where(TURNS.c.utterance_id == UTT).values(status="listening"))
    assert messages(log) == [
        "conv-1/utt-1: projection: turn.status: stored 'listening', events say 'spoken'"
    ]


def test_verify_cli_exit_codes_and_json(
    log: EventLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.runtime import config

    monkeypatch.setenv("DATABASE_URL", log.url)
    config.get_settings.cache_clear()
    try:
        assert verify_cli.main(["--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
            "conversations": 2,
            "problems": [],
        }
        with log.engine.begin() as c:
            c.execute(
                delete(EVENTS).where(
                    EVENTS.c.conversation_id == CONV,
                    EVENTS.c.type == "tts.audio-chunk",
                    EVENTS.c.seq == 0,
                )
            )
        assert verify_cli.main(["conv-1"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(line.startswith("conv-1") for line in lines)
    finally:
        config.get_settings.cache_clear()
