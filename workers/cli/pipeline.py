"""Running the pipeline for a command: embedded NATS if needed, worker processes, a live view
of one conversation's events. Used by demo, up, replay and the benchmarks.

A tool run (demo, replay, the benchmarks) is its own endpoint with its own pool of workers
(`tool_endpoint`): its durables carry the run's name and are deleted when it ends, and its
workers serve only its endpoint. So a tool run beside `just up` on one NATS leaves no trace
in the services, and the services never answer or play the tool's conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.msg import Msg

import schemas as s
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog.migrate import upgrade
from workers.runtime.natsd import NatsServer, ensure_nats
from workers.runtime.procs import READY_ROUTES, WorkerProcess
from workers.runtime.streams import ensure_streams

#: The workers a whole turn needs, in start order (the recorder first, so it records all).
SERVICES = ("recorder", "stt", "llm", "tts", "speaker")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tool_endpoint(tool: str) -> str:
    """A fresh endpoint (and pool) name for one run of a tool, e.g. "demo-3f2a9c1b"."""
    return f"{tool}-{s.new_id()[:8]}"


class EndpointInUse(RuntimeError):
    """A conversation to continue belongs to an endpoint this tool may not serve."""


def endpoint_for(settings: Settings, tool: str, conversation_id: str | None) -> str:
    """The endpoint of this tool run: a fresh one, or, to continue a conversation recorded by
    an earlier tool run, that run's endpoint (a conversation keeps its endpoint for life).
    A conversation of the services' endpoints (the device, the web page) cannot be continued
    from a tool: the running services serve it."""
    if not conversation_id:
        return tool_endpoint(tool)
    from workers.runtime.eventlog import EventLog

    log = EventLog(settings.db_url)
    try:
        row = log.conversation(conversation_id)
    finally:
        log.close()
    endpoint = row.endpoint.split(":", 1)[0] if row is not None else ""
    if endpoint in ("", s.LEGACY_ENDPOINT):
        return tool_endpoint(tool)  # recorded before endpoints existed: bound anew
    if endpoint in settings.served_endpoints:
        raise EndpointInUse(
            f"conversation {conversation_id} belongs to endpoint {row.endpoint!r}, which the "
            "services (`just up`) serve; continue it there"
        )
    return endpoint


@dataclass
class Pipeline:
    """`async with Pipeline(settings) as p:` starts NATS (if none), the log and the workers.

    With `pool`, the workers run as that tool run's own endpoint and pool (see the module
    docstring); without, they are the services of `just up`."""

    settings: Settings
    services: tuple[str, ...] | list[str] = SERVICES
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    quiet: bool = False
    pool: str = ""
    bus: Bus | None = None
    procs: dict[str, WorkerProcess] = field(default_factory=dict)
    nats: NatsServer | None = None

    def __post_init__(self) -> None:
        self.base_settings = self.settings
        if self.pool:
            self.settings = self.settings.for_pool(self.pool)

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def logs(self) -> Path:
        return self.settings.data_dir / "logs"

    def say(self, msg: str) -> None:
        if not self.quiet:
            progress(msg)

    async def __aenter__(self) -> Pipeline:
        self.nats = await asyncio.to_thread(ensure_nats, self.settings)
        if self.nats:
            self.say(f"started embedded NATS at {self.nats.url} (store {self.nats.store_dir})")
        try:
            self.bus = await Bus.connect(self.settings, "cli")
            await ensure_streams(self.bus)
            await asyncio.to_thread(upgrade, self.settings.db_url)
            t0 = time.perf_counter()
            suffix = f"-{self.pool}" if self.pool else ""
            for name in self.services:
                self.procs[name] = WorkerProcess(
                    name,
                    self.settings,
                    worker_id=name,
                    env=self.env.get(name),
                    log_file=self.logs / f"{name}{suffix}.log",
                ).start()
            self.say(f"loading models in {len(self.procs)} workers ...")
            for name, proc in self.procs.items():
                if name in READY_ROUTES:
                    await proc.wait_consumer(self.bus, timeout=180)
                    self.say(f"  {name:8} ready  ({time.perf_counter() - t0:4.1f} s)")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # In dict order (the microphone first), the recorder last, so that everything
        # published gets recorded.
        order = sorted(self.procs, key=lambda n: n == "recorder")
        for name in order:
            await asyncio.to_thread(self.procs[name].stop)
        if self.bus is not None:
            if self.pool:
                await self.bus.delete_consumers(f"-{self.pool}")
            await self.bus.close()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)

    def start_mic(
        self, *args: str, worker_id: str = "mic", env: dict[str, str] | None = None
    ) -> WorkerProcess:
        suffix = f"-{self.pool}" if self.pool else ""
        proc = WorkerProcess(
            "mic",
            self.settings,
            worker_id=worker_id,
            args=list(args),
            env=env,
            log_file=self.logs / f"{worker_id}{suffix}.log",
        ).start()
        self.procs[worker_id] = proc
        return proc

    async def watch(self, conversation_id: str, on_event: Callable[[s.Event], None]):
        """Core-NATS subscription to a conversation's events as they are published."""
        assert self.bus is not None

        async def cb(msg: Msg) -> None:
            with contextlib.suppress(s.EventDecodeError):
                on_event(s.decode(msg.data))

        subject = s.subject_filter(self.endpoint, conversation_id)
        return await self.bus.nc.subscribe(subject, cb=cb, pending_bytes_limit=-1)

    def worker_failed(self) -> str | None:
        for name, p in self.procs.items():
            if name != "mic" and not name.startswith("mic") and not p.running:
                return (
                    f"the {name} worker stopped (exit {p.proc.returncode if p.proc else '?'}); "
                    f"see {p.log_file}"
                )
        return None
