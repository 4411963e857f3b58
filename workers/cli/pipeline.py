"""Running the whole pipeline for a command: embedded NATS if needed, worker processes, a
live view of one conversation's events. Used by demo, up, replay and the e2e benchmark."""

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
from workers.runtime.procs import WorkerProcess

#: Worker module -> its durable consumer (what "ready" means for it).
SERVICES: dict[str, str | None] = {
    "recorder": "recorder",
    "stt": "stt",
    "llm": "llm",
    "tts": "tts",
    "speaker": "speaker",
}


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Pipeline:
    """`async with Pipeline(settings) as p:` starts NATS (if none), the log and the workers."""

    settings: Settings
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    quiet: bool = False
    bus: Bus | None = None
    procs: dict[str, WorkerProcess] = field(default_factory=dict)
    nats: NatsServer | None = None

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
            await self.bus.ensure_streams()
            await asyncio.to_thread(upgrade, self.settings.db_url)
            t0 = time.perf_counter()
            for name in self.services:
                self.procs[name] = WorkerProcess(
                    name,
                    self.settings,
                    worker_id=name,
                    env=self.env.get(name),
                    log_file=self.logs / f"{name}.log",
                ).start()
            self.say(f"loading models in {len(self.procs)} workers ...")
            for name, proc in self.procs.items():
                durable = SERVICES.get(name)
                if durable:
                    await proc.wait_consumer(self.bus, durable, timeout=180)
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
            await self.bus.close()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)

    def start_mic(self, *args: str, worker_id: str = "mic") -> WorkerProcess:
        proc = WorkerProcess(
            "mic",
            self.settings,
            worker_id=worker_id,
            args=list(args),
            log_file=self.logs / f"{worker_id}.log",
        ).start()
        self.procs[worker_id] = proc
        return proc

    async def watch(self, conversation_id: str, on_event: Callable[[s.Event], None]):
        """Core-NATS subscription to a conversation's events as they are published."""
        assert self.bus is not None

        async def cb(msg: Msg) -> None:
            with contextlib.suppress(s.EventDecodeError):
                on_event(s.decode(msg.data))

        return await self.bus.nc.subscribe(s.subject_filter(conversation_id), cb=cb)

    def worker_failed(self) -> str | None:
        for name, p in self.procs.items():
            if name != "mic" and not name.startswith("mic") and not p.running:
                return (
                    f"the {name} worker stopped (exit {p.proc.returncode if p.proc else '?'}); "
                    f"see {p.log_file}"
                )
        return None
