"""The llm worker's lower priority must hold against workers in other sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling here"
)

#: As `python -m workers.<name>` runs a worker (run_worker marks the process as the worker's).
PROBE = (
    "import os; from workers.runtime import service; service._OWN_PROCESS = {own}; "
    "service.lower_cpu_priority(7); "
    "print(os.nice(0)); print(open('/proc/self/autogroup').read().strip())"
)


def _autogroup() -> str:
    # "/autogroup-85 nice 0", or empty for a process still in the root group (one whose
    # session began before autogroup was on, as under some CI runners and containers).
    return Path("/proc/self/autogroup").read_text().strip()


def _probe(new_session: bool, own: bool = True) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(own=own)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=new_session,
    ).stdout.split("\n")
    return int(out[0]), out[1]


def test_a_session_leader_nices_its_autogroup_too() -> None:
    # How `just up` and the demo start workers: each in its own session, so its own
    # autogroup, where niceness alone ranked nothing against the tts.
    niceness, group = _probe(new_session=True)
    assert niceness == min(19, os.nice(0) + 7)
    assert group.endswith(" nice 7"), group


def test_a_worker_sharing_the_terminal_session_leaves_its_autogroup_alone() -> None:
    ours = _autogroup()
    niceness, group = _probe(new_session=False)
    assert niceness == min(19, os.nice(0) + 7)
    assert group == ours  # the user's shell and everything in it are not slowed


def test_a_worker_run_inside_another_program_leaves_its_priority_alone() -> None:
    """An llm worker in a test run or a tool: renicing would slow its host and everything
    the host starts after it (the suite ran at nice 10 beside the stress's CPU hog)."""
    ours = _autogroup()
    niceness, group = _probe(new_session=False, own=False)
    assert niceness == os.nice(0)
    assert group == ours


#: A turn as the llm worker runs it: idle (niced), then urgent until its first sentence,
#: then niced again; twice in quick succession, inside the kernel's 100 ms limit.
TURN_PROBE = """
import asyncio, os
from workers.runtime import service
service._OWN_PROCESS = True

def group():
    return open('/proc/self/autogroup').read().split()[-1]

async def main():
    p = service.TurnPriority(7, always={always})
    p.start()
    seen = [group()]
    for _ in range(2):
        with p.urgent():
            await asyncio.sleep(0.25)  # past a refused change and its retry
            seen.append(group())
        await asyncio.sleep(0.25)
        seen.append(group())
    print(os.nice(0), p.dynamic, *seen)

asyncio.run(main())
"""


def _turn_probe(*, always: bool = False, user: list[str] | None = None) -> list[str]:
    out = subprocess.run(
        [*(user or []), sys.executable, "-c", TURN_PROBE.format(always=always)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return out.stdout.split()


def test_the_llm_runs_at_full_priority_until_its_first_sentence_then_niced() -> None:
    base = os.nice(0)
    niceness, dynamic, *groups = _turn_probe()
    # The process itself is never reniced (that could not be undone): its group is.
    assert (int(niceness), dynamic) == (base, "True")
    assert groups == ["7", "0", "7", "0", "7"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the probe as nobody")
def test_an_unprivileged_worker_raises_its_priority_back_past_the_kernels_rate_limit() -> None:
    # Root may change an autogroup's niceness at any time; anyone else at most once per
    # 100 ms (EAGAIN) and never below 0: the worker runs as a user, not as root.
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    niceness, dynamic, *groups = _turn_probe(user=user)
    assert (int(niceness), dynamic) == (os.nice(0), "True")
    assert groups == ["7", "0", "7", "0", "7"]


def test_nice_always_nices_the_first_sentence_too() -> None:
    niceness, dynamic, *groups = _turn_probe(always=True)
    assert (int(niceness), dynamic) == (min(19, os.nice(0) + 7), "False")
    assert groups == ["7"] * 5


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the probe as nobody")
def test_an_unprivileged_worker_nices_its_group_even_just_after_another_change() -> None:
    # A user's workers start together: the kernel refuses a second change within 100 ms
    # (EAGAIN), which a buffered write lost at close, leaving the group un-niced.
    probe = (
        "import os; from workers.runtime import service; service._OWN_PROCESS = True; "
        "fd = os.open('/proc/self/autogroup', os.O_WRONLY); os.write(fd, b'3'); os.close(fd); "
        "service.lower_cpu_priority(7); print(open('/proc/self/autogroup').read().strip())"
    )
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*user, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    assert out.strip().endswith(" nice 7"), out


async def test_the_recorder_yields_the_cpu_to_the_turns(bus, settings, tmp_path: Path) -> None:
    """Nothing a user waits for needs the recorder at once: it runs niced (RECORDER_NICE),
    in its own autogroup as `just up` starts it."""
    from workers.runtime.procs import WorkerProcess

    def read(pid: int, name: str) -> str:
        with open(f"/proc/{pid}/{name}") as f:
            return f.read().strip()

    rec = WorkerProcess("recorder", settings, log_file=tmp_path / "recorder.log").start()
    try:
        await rec.wait_consumer(bus)
        assert rec.proc is not None
        stat = read(rec.proc.pid, "stat").rsplit(")", 1)[1].split()
        assert int(stat[16]) == min(19, os.nice(0) + 10)  # field 19: nice
        group = read(rec.proc.pid, "autogroup")
        assert group.endswith(" nice 10"), group
    finally:
        rec.stop()


async def test_a_file_mic_yields_the_cpu_once_its_file_is_done(
    bus, settings, tmp_path: Path
) -> None:
    """A file mic exits about a second after its last utterance ended, while the reply to
    it is being made: its shutdown runs niced (at normal priority it cost that reply's
    first audio ~100 ms on 2 cores)."""
    import asyncio
    import time

    from workers.runtime.audio import write_wav
    from workers.runtime.procs import WorkerProcess

    wav = write_wav(tmp_path / "quiet.wav", bytes(2 * 16_000), 16_000)
    mic = WorkerProcess(
        "mic", settings, args=["--file", str(wav), "--fast"], log_file=tmp_path / "mic.log"
    ).start()
    assert mic.proc is not None
    pid = mic.proc.pid

    def niceness_until_exit() -> list[int]:
        seen: list[int] = []
        while mic.proc.poll() is None:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
            except OSError:
                break
            if stat[0] == "Z":
                break
            seen.append(int(stat[16]))  # field 19: nice
            time.sleep(0.0005)
        return seen

    try:
        seen = await asyncio.wait_for(asyncio.to_thread(niceness_until_exit), 120)
    finally:
        mic.stop()
    assert mic.proc.returncode == 0, (tmp_path / "mic.log").read_text()[-2000:]
    normal = os.nice(0)
    assert seen[0] == normal  # streaming at the priority it was started with
    assert seen[-1] == 19, sorted(set(seen))  # then shutting down niced
