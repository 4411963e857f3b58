"""How workers and services end: resources released however they end, work handed back at
once, no file descriptor left per start, no orphaned nats-server, a crash after a restart is
restarted (not taken for a configuration error), a restarted mic keeps its conversation."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from nats.js.api import DeliverPolicy

import schemas as s
from tests.conftest import ROOT, wait_for
from workers.cli import up
from workers.runtime.bus import Bus, Consumer
from workers.runtime.config import Settings
from workers.runtime.natsd import NatsServer, free_port, is_listening
from workers.runtime.procs import WorkerProcess
from workers.runtime.service import StartupError, Worker, serve


class Probe(Worker):
    name = "probe"
    fail_setup = False
    fail_background = False

    def __init__(self, bus: Bus, settings: Settings) -> None:
        super().__init__(bus, settings)
        self.closed = 0

    async def setup(self) -> None:
        if self.fail_setup:
            raise StartupError("no such device")

    async def background(self) -> None:
        if self.fail_background:
            raise RuntimeError("consumer broke")
        await self.stopping.wait()

    async def aclose(self) -> None:
        self.closed += 1


async def test_aclose_runs_when_setup_fails(settings: Settings) -> None:
    made: list[Probe] = []

    def factory(bus: Bus, st: Settings) -> Probe:
        w = Probe(bus, st)
        w.fail_setup = True
        made.append(w)
        return w

    with pytest.raises(StartupError):
        await serve(factory, settings)
    assert made[0].closed == 1


async def test_aclose_runs_once_when_a_consumer_fails(bus: Bus, settings: Settings) -> None:
    w = Probe(bus, settings)
    w.fail_background = True
    with pytest.raises(RuntimeError, match="consumer broke"):
        await w.run()
    assert w.closed == 1
    await w.close()  # serve's own close after run: still once
    assert w.closed == 1


def _events(n: int) -> list[s.Event]:
    b = {"endpoint": "device", "conversation_id": "rel", "utterance_id": "u"}
    return [s.Transcript(**b, text=f"q{i}", seq=i) for i in range(n)]


async def test_fetched_but_unstarted_messages_are_handed_back_at_once_on_stop(
    bus: Bus,
) -> None:
    events = _events(5)
    for e in events:
        await bus.publish(e)
    handled: list[str] = []
    subject = [s.subject_filter("device", "rel", "stt.transcript")]

    async def stop_after_first(event: s.Event, _d: object) -> None:
        handled.append(event.event_id)
        first.stop()

    # A long ack wait: only a release makes the rest available to another instance soon.
    opts = {"batch": 10, "ack_wait": 60.0, "deliver_policy": DeliverPolicy.ALL}
    first = bus.consumer("release", subject, handler=stop_after_first, **opts)
    await first.start()
    await first.run()
    assert len(handled) == 1

    async def take(event: s.Event, _d: object) -> None:
        handled.append(event.event_id)

    second: Consumer = await bus.consumer("release", subject, handler=take, **opts).start()
    task = asyncio.create_task(second.run())
    try:
        await wait_for(lambda: len(handled) == 5, timeout=10)
    finally:
        second.stop()
        await task
    assert sorted(handled) == sorted(e.event_id for e in events)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_log_file_is_left_open_per_start(tmp_path: Path, settings: Settings) -> None:
    # CPython closes an unreferenced file when the function returns, with a ResourceWarning:
    # the warning is the visible defect (another interpreter, or a reference kept, leaks).
    server = NatsServer(free_port(), tmp_path / "n", log_file=tmp_path / "nats.log")
    server.start().stop()  # warm up (imports, caches)
    before = _fds()
    bad = settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}"})
    proc = WorkerProcess("recorder", bad, log_file=tmp_path / "rec.log")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            server.start()
            server.stop()
            proc.start()  # a worker that exits at once (no NATS there)
            assert proc.proc is not None
            proc.proc.wait(60)
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [m for m in unclosed if ".log" in m], unclosed
    assert _fds() == before


def test_just_nats_stopped_with_sigterm_stops_its_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    env = {**os.environ, "NATS_URL": url, "DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.runtime.natsd"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            if is_listening(url):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert is_listening(url)
        proc.send_signal(signal.SIGTERM)  # as a service manager stops it
        assert proc.wait(15) == 0
        assert not is_listening(url), "nats-server left running without its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        # Never leave the server this test started behind, even when the test fails.
        for pid in _pids_with(str(tmp_path / "data" / "nats" / "nats-server.conf")):
            os.kill(pid, signal.SIGKILL)


def _pids_with(arg: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if arg.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class ScriptedProc:
    """A service process that dies after a scripted time (duck-typed WorkerProcess)."""

    def __init__(self, lifetimes: list[float]) -> None:
        self.lifetimes = lifetimes
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = None

    def start(self) -> ScriptedProc:
        life = self.lifetimes[min(self.starts, len(self.lifetimes) - 1)]
        self.starts += 1
        code = f"import sys, time; time.sleep({life}); sys.exit(1)"
        self.proc = subprocess.Popen([sys.executable, "-c", code])
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


async def test_a_crash_right_after_a_restart_is_restarted_not_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(up, "FIRST_START_S", 0.5, raising=False)
    monkeypatch.setattr(up, "RESTART_DELAY_S", 0.05, raising=False)
    # Runs past its first start, crashes; crashes again at once after the restart (a bad
    # moment, not a bad configuration); then stays up.
    worker = ScriptedProc([1.0, 0.0, 600.0])
    p = argparse.Namespace(procs={"llm": worker.start()})
    stop = asyncio.Event()
    task = asyncio.create_task(up.supervise(p, stop))  # type: ignore[arg-type]
    try:
        await wait_for(lambda: worker.starts == 3 and worker.running, timeout=20)
        await asyncio.sleep(0.3)
        assert not task.done(), task.exception()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5) if not task.done() else None
        worker.kill()


def test_the_mic_of_just_up_keeps_its_conversation_across_restarts() -> None:
    args = argparse.Namespace(device=None, conversation=None)
    mic = up.mic_args(args)
    conversation = mic[mic.index("--conversation") + 1]
    assert s.envelope._TOKEN_RE.match(conversation)
    given = up.mic_args(argparse.Namespace(device="hw:1", conversation="kitchen"))
    assert given == ["--device", "hw:1", "--conversation", "kitchen"]
