"""Graceful shutdown: SIGTERM while events pour in drains, acks and flushes the recorder."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess


async def test_sigterm_while_publishing_exits_0_with_everything_it_acked_in_the_log(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    log_file = tmp_path / "recorder.log"
    recorder = WorkerProcess("recorder", settings, log_file=log_file).start()
    await recorder.wait_consumer(bus, timeout=60)
    published: list[s.Event] = []
    stop = asyncio.Event()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            ev = s.MicAudioChunk(
                endpoint="device",
                conversation_id="shut",
                utterance_id="u",
                seq=i,
                audio=b"\1\0" * 320,
            )
            await bus.publish_nowait(ev)
            published.append(ev)
            i += 1
            if i % 50 == 0:
                await bus.flush_publishes()
                await asyncio.sleep(0.005)
        await bus.flush_publishes()

    task = asyncio.create_task(publisher())
    log = EventLog(settings.db_url)
    await wait_for(lambda: log.count("shut") > 500, 30)
    assert recorder.proc is not None
    recorder.proc.send_signal(signal.SIGTERM)  # mid-stream: the publisher keeps going
    code = await asyncio.to_thread(recorder.proc.wait, 20)
    stop.set()
    await task
    assert code == 0, log_file.read_text()[-3000:]

    # The exited recorder's last acks and naks reach the consumer a moment after its
    # connection closed (another connection than this one): well inside the 5 s ack wait
    # that a delivery it left unacked would take to come back.
    info = await bus.js.consumer_info(bus.stream, "recorder")
    for _ in range(20):
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
        info = await bus.js.consumer_info(bus.stream, "recorder")
    acked_up_to = info.ack_floor.stream_seq
    logged = {r.stream_seq for r in log.event_rows(conversation_id="shut", with_payload=False)}
    assert acked_up_to > 0
    assert set(range(1, acked_up_to + 1)) <= logged, "acked but not in the log"
    assert info.num_ack_pending == 0, "SIGTERM left deliveries unacked"
    assert len(published) > len(logged)  # it really stopped mid-stream

    # The rest is recorded by the next run: nothing lost, nothing twice.
    again = WorkerProcess("recorder", settings, log_file=log_file).start()
    try:
        await wait_for(lambda: log.count("shut") == len(published), 30)
        ids = [r.event_id for r in log.event_rows(conversation_id="shut", with_payload=False)]
        assert sorted(ids) == sorted(e.event_id for e in published)
    finally:
        assert again.stop() == 0
        log.close()
