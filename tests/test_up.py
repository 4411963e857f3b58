"""`just up` as a user runs it: services start, a turn goes through, Ctrl-C stops cleanly,
and the next start continues the same conversation from the durable consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from workers.cli.demo import synthesize_question
from workers.runtime.eventlog import EventLog
from workers.runtime.natsd import NatsServer

pytestmark = pytest.mark.slow


def run_up(env: dict[str, str], log: EventLog, conversation: str, turns: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.up", "--conversation", conversation],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            done = [t for t in log.turns(conversation) if t.playback_done_at]
            if len(done) >= turns:
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.3)
        else:
            raise AssertionError("turn did not complete under `just up`")
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


def test_up_serves_a_turn_stops_on_ctrl_c_and_continues_after_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    wav = synthesize_question("What is two plus two?", tmp_path / "q.wav")
    db = tmp_path / "voice.db"
    env = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{db}",
        "MIC_FILE": str(wav),
        "MIC_REALTIME": "0",
        "SPEAKER_SINK": "wav",
        "SPEAKER_REALTIME": "0",
    }
    log = EventLog(f"sqlite:///{db}")
    err = run_up(env, log, "upconv", turns=1)
    assert "stopped cleanly" in err
    first = log.turns("upconv")[0]
    assert first.transcript.strip() and first.reply_text.strip()
    # Second start: same data, same durable consumers, same conversation -> turn 2.
    run_up(env, log, "upconv", turns=2)
    turns = log.turns("upconv")
    assert [t.turn_index for t in turns] == [0, 1]
    assert turns[0].utterance_id == first.utterance_id  # nothing re-processed or lost
    log.close()
