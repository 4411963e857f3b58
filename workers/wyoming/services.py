"""What the bridge needs running: NATS and the workers that serve the `wyoming` endpoint.

Each is started only if it is missing, so `just wyoming` next to `just up` (whose workers
serve the endpoint by default, ENDPOINTS) adds only the Wyoming server, and alone it brings
up the recorder, stt, llm and tts like `just up` does (no microphone or speaker: the Wyoming
client is both).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors
import nats.js.errors

from schemas import subject_filter
from workers.cli.pipeline import Pipeline
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import NatsServer, ensure_nats
from workers.runtime.procs import READY_ROUTES
from workers.runtime.streams import ensure_streams
from workers.wyoming.config import ENDPOINT

#: The workers a Wyoming request needs (the recorder first, so it records everything).
NEEDED = ("recorder", "stt", "llm", "tts")
#: How long to watch a durable for a waiting pull request before calling its worker absent.
PROBE_S = 1.5


async def serving(bus: Bus, module: str) -> bool:
    """Whether a worker of `module` pulls from its shared durable, on the wyoming endpoint."""
    route = READY_ROUTES[module]
    durable = route.durable()
    wanted = subject_filter(ENDPOINT, "*", route.types[0]) if route.types else "voice.>"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROBE_S
    while loop.time() < deadline:
        try:
            info = await bus.js.consumer_info(bus.stream, durable)
        except (nats.js.errors.NotFoundError, nats.errors.Error, TimeoutError):
            return False
        filters = info.config.filter_subjects or [info.config.filter_subject or "voice.>"]
        if not any(f in (wanted, "voice.>", subject_filter(ENDPOINT)) for f in filters):
            return False  # it serves other endpoints only
        if info.num_waiting:
            return True
        await asyncio.sleep(0.1)
    return False


class Services:
    """`async with Services(settings):` NATS and the missing workers, stopped on exit."""

    def __init__(
        self, settings: Settings, start: bool = True, progress: Callable[[str], None] = print
    ) -> None:
        self.settings = settings
        self.start = start
        self.progress = progress
        self.nats: NatsServer | None = None
        self.pipeline: Pipeline | None = None

    async def __aenter__(self) -> Services:
        if not self.start:
            return self
        self.nats = await asyncio.to_thread(ensure_nats, self.settings)
        if self.nats:
            self.progress(f"started NATS at {self.nats.url}")
        try:
            missing = await self._missing()
            if missing:
                self.progress(f"starting workers: {', '.join(missing)}")
                self.pipeline = Pipeline(self.settings, services=missing, quiet=False)
                await self.pipeline.__aenter__()
            else:
                self.progress("the workers already serve the endpoint")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _missing(self) -> list[str]:
        bus = await Bus.connect(self.settings, name="wyoming-probe")
        try:
            await ensure_streams(bus)
            found = await asyncio.gather(*(serving(bus, m) for m in NEEDED))
        finally:
            await bus.close()
        return [m for m, ok in zip(NEEDED, found, strict=True) if not ok]

    async def __aexit__(self, *exc: object) -> None:
        if self.pipeline is not None:
            with contextlib.suppress(Exception):
                await self.pipeline.__aexit__(None, None, None)
            self.pipeline = None
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
            self.nats = None
