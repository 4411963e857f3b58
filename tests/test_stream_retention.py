"""Retention: a full stream refuses new events out loud instead of dropping unrecorded ones,
and the recorder warns when it falls behind."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import nats.js.errors
import pytest

import schemas as s
from tests.conftest import nats_setup, wait_for
from tests.support import running
from workers.recorder.worker import Recorder
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.natsd import NatsServer
from workers.runtime.streams import recorder_lag


def transcript(i: int) -> s.Transcript:
    return s.Transcript(
        endpoint="device", conversation_id="r1", utterance_id=f"u{i}", text="x" * 200
    )


@pytest.fixture
def tiny(nats_server: NatsServer, tmp_path: Path) -> Settings:
    """A stream capped at 16 KiB (a few dozen events), set up as `just nats-setup` does."""
    settings = Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{(tmp_path / 'voice.db').as_posix()}",
        stream_max_bytes=16 * 1024,
        _env_file=None,  # type: ignore[call-arg]
    )
    nats_setup(settings)
    return settings


async def test_a_full_stream_refuses_new_events_and_keeps_every_unrecorded_one(
    tiny: Settings,
) -> None:
    bus = await Bus.connect(tiny, name="test")
    try:
        stored: list[s.Transcript] = []
        with pytest.raises(nats.js.errors.APIError) as refused:
            for i in range(1000):
                event = transcript(i)
                await bus.publish(event)
                stored.append(event)
        assert "maximum bytes" in str(refused.value).lower(), refused.value
        assert 10 < len(stored) < 1000
        info = await bus.js.stream_info(bus.stream)
        # Nothing the recorder has not seen was dropped to make room.
        assert (info.state.first_seq, info.state.messages) == (1, len(stored))
        recorder = Recorder(bus, tiny)
        async with running(recorder):
            await wait_for(lambda: recorder.committed >= len(stored), 30)
        log = EventLog(tiny.db_url)
        try:
            assert log.count("r1") == len(stored)
        finally:
            log.close()
    finally:
        await bus.close()


async def test_the_recorder_warns_when_it_falls_behind(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The log is locked by another writer: commits wait, the lag grows, the warning says
    how far behind and when the oldest event would be dropped."""
    monkeypatch.setenv("RECORDER_LAG_CHECK_S", "0.2")
    monkeypatch.setenv("RECORDER_LAG_WARN_S", "0.5")
    bus = await Bus.connect(settings, name="test")
    EventLog(settings.db_url).close()  # tables exist
    db = sqlite3.connect(tmp_path / "voice.db", timeout=1, isolation_level=None)
    try:
        recorder = Recorder(bus, settings)
        with caplog.at_level(logging.WARNING, logger="voicebus.recorder"):
            async with running(recorder):
                await recorder.bus.publish(transcript(0))
                await wait_for(lambda: recorder.committed >= 1, 20)
                db.execute("BEGIN EXCLUSIVE")
                for i in range(1, 6):
                    await bus.publish(transcript(i))
                await wait_for(lambda: "events behind" in caplog.text, 20)
                lag = await recorder_lag(bus, recorder._consumers[0].durable)
                assert lag.events >= 5 and lag.recorded_seq < lag.last_seq
                assert lag.oldest_s > 0.5
                db.execute("ROLLBACK")
                await wait_for(lambda: recorder.committed >= 6, 40)
        assert "dropped unrecorded at 604800 s" in caplog.text
        caught_up = await recorder_lag(bus, recorder._consumers[0].durable)
        assert (caught_up.events, caught_up.recorded_seq) == (0, caught_up.last_seq)
        assert caught_up.warnings(604800, 0.5, 0.8) == []
    finally:
        db.close()
        await bus.close()
