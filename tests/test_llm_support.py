"""Helpers for the llm tests: in-process workers, an event tap, turns. No tests here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from schemas import Event, ReplyDone, Transcript, decode, new_id
from tests.conftest import wait_for
from workers.llm.config import LlmSettings
from workers.runtime.bus import Bus
from workers.runtime.service import Worker


def llm_settings(**kw: Any) -> LlmSettings:
    kw.setdefault("max_tokens", 48)
    kw.setdefault("memory_wait_s", 2.0)
    return LlmSettings(_env_file=None, **kw)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running(worker: Worker, timeout: float = 20.0) -> AsyncIterator[Worker]:
    """Run a worker in this event loop until the block ends (drained as on SIGTERM)."""
    await worker.setup()
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (worker._consumers and all(c._sub for c in worker._consumers)):
        if task.done():
            task.result()
        if loop.time() > deadline:
            raise TimeoutError(f"{worker.name} did not start")
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


class Tap:
    """Every event on voice.> as the bus delivers it, with its arrival time (core NATS)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived: list[float] = []
        self._sub: Any = None

    async def start(self, bus: Bus, subject: str = "voice.>") -> Tap:
        loop = asyncio.get_running_loop()

        async def cb(msg: Any) -> None:
            self.events.append(decode(msg.data))
            self.arrived.append(loop.time())

        self._sub = await bus.nc.subscribe(subject, cb=cb)
        await bus.nc.flush()
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def of(self, cls: type[Event], utterance_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (utterance_id is None or e.utterance_id == utterance_id)
        ]

    async def done(self, utterance_id: str, timeout: float = 20.0) -> ReplyDone:
        found = await wait_for(lambda: self.of(ReplyDone, utterance_id), timeout=timeout)
        return found[0]


def transcript(text: str, conversation_id: str | None = None) -> Transcript:
    return Transcript(
        conversation_id=conversation_id or new_id()[:12],
        utterance_id=new_id(),
        text=text,
        producer="stt-test",
        confidence=0.9,
    )
