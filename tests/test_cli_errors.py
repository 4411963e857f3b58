"""Bad input to a command: a one-line error naming the problem, non-zero exit, no traceback.

To cover another command, add a `Case` to CASES: the argv after `python -m workers.cli.`,
extra environment, an optional setup(tmp_path) and the text the error line must contain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import schemas as s
from workers.runtime.eventlog import EventLog, Record

UNREACHABLE_NATS = "nats://no-such-host.invalid:4222"  # not local: nothing is started


def one_old_conversation(tmp: Path) -> None:
    log = EventLog(f"sqlite:///{tmp / 'data' / 'voice.db'}")
    ev = s.Transcript(
        endpoint="device", conversation_id="old", utterance_id="u", text="x", ts=time.time() - 1e8
    )
    log.append([Record.of(ev)])
    log.close()


def not_a_wav(tmp: Path) -> None:
    (tmp / "notes.wav").write_text("these are not samples\n")


@dataclass(frozen=True)
class Case:
    argv: list[str]
    expect: str
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:60]


CASES = [
    Case(["verify"], "no event log at"),
    Case(["verify", "nope"], "unknown conversation id 'nope'", setup=one_old_conversation),
    Case(["verify"], "is not a database URL", env={"DATABASE_URL": "not a url"}),
    Case(
        ["verify"],
        "cannot open the event log",
        env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    ),
    Case(["purge"], "the following arguments are required: --older-than"),
    Case(["purge", "--older-than", "a while"], "bad age 'a while'"),
    Case(["purge", "--older-than", "30d"], "no event log at"),
    Case(
        ["purge", "--older-than", "30d"],
        "nothing deleted",
        env={"NATS_URL": UNREACHABLE_NATS},
        setup=one_old_conversation,
    ),
    Case(["transcribe", "{tmp}/missing.wav"], "missing.wav: no such file"),
    Case(["transcribe", "{tmp}/notes.wav"], "not a readable audio file", setup=not_a_wav),
    Case(["ask", "hello?"], "nothing listens at", env={"NATS_URL": UNREACHABLE_NATS}),
    Case(["trace", "nope"], "no conversation 'nope'", setup=one_old_conversation),
    Case(["replay", "nope"], "no conversation 'nope'", setup=one_old_conversation),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gets_a_one_line_error_and_a_nonzero_exit(case: Case, tmp_path: Path) -> None:
    if case.setup:
        case.setup(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "DATABASE_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "NATS_URL": "nats://127.0.0.1:1"})
    env.update(case.env)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    r = subprocess.run(
        [sys.executable, "-m", f"workers.cli.{argv[0]}", *argv[1:]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and case.expect in errors[0], r.stderr
    # Only argparse adds its usage lines; otherwise the error is all there is.
    assert len(lines) == 1 or lines[0].startswith("usage:"), r.stderr
