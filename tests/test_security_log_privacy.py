"""What the user said and what the assistant answered never reach the logs above DEBUG."""

from __future__ import annotations

from pathlib import Path

import pytest

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess

SECRET = "my bank password is zebra-cactus-42"


@pytest.mark.parametrize("level", ["WARNING", "INFO"])  # the default, and more
async def test_transcripts_and_replies_stay_out_of_worker_logs(
    bus: Bus, settings: Settings, tmp_path: Path, level: str
) -> None:
    cfg = settings.model_copy(update={"log_level": level})
    logs = {name: tmp_path / f"{name}-{level}.log" for name in ("recorder", "llm")}
    procs = [
        WorkerProcess(name, cfg, log_file=path, env={"LLM_MAX_TOKENS": "24"}).start()
        for name, path in logs.items()
    ]
    log = EventLog(settings.db_url)
    try:
        for p in procs:
            await p.wait_consumer(bus, timeout=120)
        said = s.Transcript(
            endpoint="device", conversation_id="priv", utterance_id="u1", text=f"Hello, {SECRET}."
        )
        await bus.publish(said)
        # A garbage transcript too: its dead-letter reason must not quote it either.
        await bus.js.publish(
            "voice.device.priv.stt.transcript",
            s.encode(said).replace(b'"seq":0', b'"seq":-1').replace(b"Hello", b"Hullo"),
        )
        done = await wait_for(
            lambda: log.events(conversation_id="priv", types=["llm.reply-done"]), 120
        )
        reply = done[0].text.strip()
    finally:
        for p in procs:
            p.stop()
        log.close()
    assert reply, "the llm replied nothing: nothing to look for"
    for name, path in logs.items():
        text = path.read_text() if path.exists() else ""
        assert "zebra-cactus" not in text, f"{name} logged the transcript at {level}"
        assert reply not in text, f"{name} logged the reply at {level}"
        if level == "INFO":
            assert text, f"{name} logged nothing at INFO: the test proves nothing"
