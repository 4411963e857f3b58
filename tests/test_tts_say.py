"""`just say`: text -> tts worker -> WAV sink over the bus, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

from workers.runtime.natsd import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_say(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # Nothing listens there: the command starts (and stops) the embedded server itself.
    env.update({"NATS_URL": f"nats://127.0.0.1:{free_port()}", "DATA_DIR": str(tmp_path / "d")})
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.say", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_say_writes_the_wav_and_reports_json_on_the_last_line(tmp_path):
    out = tmp_path / "hello.wav"
    text = "Hello from the speaker. The audio went over the bus, sentence by sentence."
    p = run_say(tmp_path, text, "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(result) >= {"wav", "sample_rate", "duration_s", "first_audio_ms"}
    assert result["wav"] == str(out) and result["sample_rate"] == 22050
    assert result["sentences"] == 2
    assert 0 < result["first_audio_ms"] < 5000
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1
        seconds = w.getnframes() / w.getframerate()
    assert abs(seconds - result["duration_s"]) < 0.01 and 3 < seconds < 10


def test_say_with_nothing_to_say_is_a_one_line_error(tmp_path):
    p = run_say(tmp_path, "   ", "--out", str(tmp_path / "x.wav"))
    assert p.returncode == 2
    assert p.stderr.strip() == "say: error: nothing to say (empty TEXT)"
    p = run_say(tmp_path, "Hi.", "--out", str(tmp_path))
    assert p.returncode == 2 and "is a directory" in p.stderr and "Traceback" not in p.stderr
