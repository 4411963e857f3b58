"""`just up`: every worker as a long-lived service on the live microphone and speakers.

NATS is started when nothing listens at NATS_URL. A worker that dies is restarted (with a
back-off); one that fails at start-up with a configuration error (exit code 2: no device,
missing model) stops everything with its message. Ctrl-C or SIGTERM stops the microphone
first, lets the other workers drain and ack what they hold, and stops the recorder last.
The consumers are durable, so the next `just up` continues where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from schemas import new_id
from workers.cli.pipeline import SERVICES, Pipeline, progress
from workers.runtime.bus import BusError
from workers.runtime.config import get_settings
from workers.runtime.natsd import NatsServerError
from workers.runtime.procs import WorkerProcess

RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 5


class ConfigError(RuntimeError):
    pass


def last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


#: An exit this soon after the first start is a configuration error (bad device, model,
#: credentials), not a crash worth restarting; after a restart, a quick exit is a crash.
FIRST_START_S = 3.0
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 10.0


async def supervise(p: Pipeline, stop: asyncio.Event) -> None:
    restarts: dict[str, list[float]] = {}
    finished: set[str] = set()
    started = {name: time.monotonic() for name in p.procs}
    due: dict[str, float] = {}
    """When a dead worker is started again (back-off)."""
    while not stop.is_set():
        now = time.monotonic()
        for name, proc in list(p.procs.items()):
            if proc.running or name in finished:
                continue
            if name in due:
                if now >= due[name]:
                    del due[name]
                    proc.start()
                    started[name] = time.monotonic()
                continue
            code = proc.proc.returncode if proc.proc else None
            if code == 0:
                # A clean exit is a worker that is done (a mic at the end of MIC_FILE).
                finished.add(name)
                progress(f"{name} finished")
                continue
            first_start = name not in restarts
            if code == 2 or (first_start and now - started[name] < FIRST_START_S):
                raise ConfigError(f"{name} cannot start: {last_line(proc.log_file) or code}")
            recent = [t for t in restarts.get(name, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                raise ConfigError(
                    f"{name} keeps dying ({MAX_RESTARTS} restarts in "
                    f"{RESTART_WINDOW_S:.0f} s); see {proc.log_file}"
                )
            restarts[name] = [*recent, now]
            delay = min(RESTART_DELAY_MAX_S, RESTART_DELAY_S * 2 ** len(recent))
            progress(f"{name} exited ({code}); restarting in {delay:.1f} s")
            due[name] = now + delay
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


def mic_args(args: argparse.Namespace) -> list[str]:
    """The mic's arguments, the same for every restart. The conversation is chosen here, not
    by the mic: a mic restarted after a crash continues the same conversation (its history,
    the llm's memory) instead of starting a new one."""
    out = ["--device", args.device] if args.device else []
    return [*out, "--conversation", args.conversation or new_id()[:16]]


DEFAULT_WAKE_WORD = "okay_nabu"


async def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    env = {"speaker": {"SPEAKER_SINK": os.environ.get("SPEAKER_SINK", "device")}}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Pipeline(settings, env=env) as p:
        # An always-on microphone answers only after its wake word; a file (MIC_FILE) is
        # all meant for the assistant unless MIC_WAKE_WORD asks for one.
        default_wake = "" if os.environ.get("MIC_FILE") else DEFAULT_WAKE_WORD
        mic_env = {"MIC_WAKE_WORD": os.environ.get("MIC_WAKE_WORD", default_wake)}
        mic = WorkerProcess(
            "mic",
            settings,
            worker_id="mic",
            args=mic_args(args),
            env=mic_env,
            log_file=p.logs / "mic.log",
        )
        # The microphone goes first in the dict so it is stopped first.
        p.procs = {"mic": mic.start(), **p.procs}
        progress(f"listening (workers: {', '.join(p.procs)}; logs in {p.logs}); Ctrl-C stops")
        try:
            await supervise(p, stop)
        finally:
            progress("stopping: microphone first, recorder last ...")
    progress("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", help="PortAudio input device (name or index)")
    ap.add_argument("--conversation", help="conversation id to continue (default: a new one)")
    args = ap.parse_args(argv)
    assert set(SERVICES) >= {"recorder", "stt", "llm", "tts", "speaker"}
    try:
        return asyncio.run(run(args))
    except (ConfigError, BusError, NatsServerError, RuntimeError, TimeoutError) as exc:
        print(f"up: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
