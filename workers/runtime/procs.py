"""Running workers as separate processes (demo, CLI commands, tests): start, wait, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats.errors
import nats.js.errors

from schemas import routing
from workers.runtime.bus import Bus
from workers.runtime.config import Settings


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child worker so it sees the same bus, log and data folder."""
    env = dict(os.environ)
    env.update(
        {
            "NATS_URL": settings.nats_url,
            "DATA_DIR": str(settings.data_dir),
            "DATABASE_URL": settings.db_url,
            "JETSTREAM": settings.stream_name,
            "LOG_LEVEL": settings.log_level,
            "NATS_SYNC_INTERVAL": settings.nats_sync_interval,
            "ENDPOINT": settings.endpoint,
            "ENDPOINTS": settings.endpoints,
            "POOL": settings.pool,
        }
    )
    if settings.nats_user:
        env["NATS_USER"] = settings.nats_user
    if settings.nats_password:
        env["NATS_PASSWORD"] = settings.nats_password
    env.update(extra)
    return env


class WorkerProcess:
    """`python -m workers.<module>` in its own process group."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        worker_id: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.module = module
        self.worker_id = worker_id or module
        self.settings = settings
        self.args = args or []
        self.env = settings_env(settings, WORKER_ID=self.worker_id, **(env or {}))
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        out = subprocess.DEVNULL
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_file, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"workers.{self.module}", *self.args],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child has its own copy; ours leaked one per (re)start
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_consumer(
        self, bus: Bus, durable: str | None = None, timeout: float = 60.0
    ) -> None:
        """Wait until this worker pulls from its durable consumer (see `wait_pulling`); by
        default the one its module claims work on, in its pool and endpoint."""
        await wait_pulling(
            bus, durable or ready_durable(self.module, self.settings), [self], timeout
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        return None if self.proc is None else stop_process(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM, and SIGKILL to its process group (started in a session of its own) if it
    has not ended after `timeout` s. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


#: The route whose consumer shows that a worker of each module is ready.
READY_ROUTES = {
    "recorder": routing.RECORDER,
    "stt": routing.STT,
    "llm": routing.LLM,
    "tts": routing.TTS,
    "speaker": routing.SPEAKER,
}


def ready_durable(module: str, settings: Settings) -> str:
    """The durable a worker of `module` pulls from once it is ready, under `settings`."""
    route = READY_ROUTES.get(module)
    if route is None:
        raise ValueError(f"no consumer tells when a {module} worker is ready")
    return route.durable(settings.pool, settings.endpoint)


async def wait_pulling(
    bus: Bus, durable: str, procs: list[WorkerProcess], timeout: float = 60.0
) -> None:
    """Wait until a worker pulls from `durable` (it has loaded its models), failing at once
    if one of `procs` exits.

    The durable may exist from an earlier run, so existence proves nothing: a waiting pull
    request, or deliveries moving on, does.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first_delivered: int | None = None
    while loop.time() < deadline:
        for p in procs:
            if not p.running:
                code = p.proc.returncode if p.proc else "?"
                raise RuntimeError(
                    f"the {p.worker_id} worker exited with code {code}"
                    + (f"; see {p.log_file}" if p.log_file else "")
                )
        try:
            info = await bus.js.consumer_info(bus.stream, durable)
            delivered = info.delivered.stream_seq if info.delivered else 0
            if first_delivered is None:
                first_delivered = delivered
            if info.num_waiting or delivered != first_delivered:
                return
        except nats.js.errors.NotFoundError:
            first_delivered = 0
        except (nats.errors.Error, TimeoutError):
            pass  # a cluster electing a new leader after a node died: ask again
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the {durable} worker is not ready after {timeout:.0f} s")
