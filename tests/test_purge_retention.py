"""`just purge --older-than`: old conversations leave the log, the disk and JetStream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import schemas as s
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.procs import settings_env

DAY = 86400.0


def turn(conv: str, ts: float) -> list[s.Event]:
    base = {"endpoint": "device", "conversation_id": conv, "utterance_id": f"{conv}-u", "ts": ts}
    return [
        s.VoiceStarted(**base, producer="mic"),
        s.MicAudioChunk(**base, producer="mic", audio=b"\x01\x00" * 80),
        s.VoiceStopped(**base, producer="mic", chunks=1, duration_ms=5.0, speech_end_ts=ts),
        s.Transcript(**base, producer="stt", text="secret words"),
    ]


def purge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.purge", *args, "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def stored(bus: Bus, conv: str) -> int:
    info = await bus.js.stream_info(bus.stream, subjects_filter=f"voice.*.{conv}.>")
    return sum((info.state.subjects or {}).values())


async def test_purge_older_than_deletes_log_audio_and_stream_copies(
    bus: Bus, settings: Settings
) -> None:
    now = time.time()
    log = EventLog(settings.db_url)
    for conv, ts in (("old-conv", now - 40 * DAY), ("new-conv", now - 1 * DAY)):
        evs = turn(conv, ts)
        log.append([Record.of(e) for e in evs])
        for e in evs:
            await bus.publish(e)
        wav = settings.data_dir / "replies" / conv / "reply.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        wav.write_bytes(b"RIFF")
    assert await stored(bus, "old-conv") == 4

    dry = purge(settings, "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout.splitlines()[-1])["conversations"] == ["old-conv"]
    assert log.count("old-conv") == 4 and await stored(bus, "old-conv") == 4

    run = purge(settings, "--older-than", "30d")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout.splitlines()[-1])
    assert doc["conversations"] == ["old-conv"]
    assert doc["events"] == 4 and doc["stream_messages"] == 4 and doc["reply_folders"] == 1
    assert log.count("old-conv") == 0 and log.conversation("old-conv") is None
    assert log.turns("old-conv") == []
    assert not (settings.data_dir / "replies" / "old-conv").exists()
    assert await stored(bus, "old-conv") == 0
    # The recent conversation is untouched everywhere.
    assert log.count("new-conv") == 4 and log.conversation("new-conv") is not None
    assert (settings.data_dir / "replies" / "new-conv" / "reply.wav").exists()
    assert await stored(bus, "new-conv") == 4
    log.close()


def test_purge_refuses_a_bad_age(settings: Settings, tmp_path: Path) -> None:
    r = purge(settings, "--older-than", "soon")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "purge: error: bad age 'soon': want a number and a unit, e.g. 30d, 12h, 2w"
    )
