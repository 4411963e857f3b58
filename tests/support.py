"""Test helpers shared by the worker tests: a worker run in-process, an event tap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from schemas import Event, ReplyDone, decode
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.service import Worker


@contextlib.asynccontextmanager
async def running(
    worker: Worker, timeout: float = 20.0, consumers: bool = True
) -> AsyncIterator[Worker]:
    """Run a worker in this event loop until the block ends (drained like on SIGTERM);
    returns once its consumers are subscribed (`consumers=False`: a pure producer)."""
    await worker.setup()
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while consumers and not (worker._consumers and all(c._sub for c in worker._consumers)):
        if task.done():
            task.result()
        if loop.time() > deadline:
            raise TimeoutError(f"{worker.name} did not start")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


class Tap:
    """Every event on voice.> as the bus delivers it, with its arrival (wall-clock) time."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived: list[float] = []
        self._sub = None

    async def start(self, bus: Bus, subject: str = "voice.>") -> Tap:
        async def cb(msg) -> None:  # type: ignore[no-untyped-def]
            self.events.append(decode(msg.data))
            self.arrived.append(time.time())

        self._sub = await bus.nc.subscribe(subject, cb=cb)
        await bus.nc.flush()
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def arrival(self, event: Event) -> float:
        return next(t for e, t in zip(self.events, self.arrived, strict=True) if e is event)

    def of(self, cls: type[Event], utterance_id: str | None = None) -> list:  # type: ignore[type-arg]
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (utterance_id is None or e.utterance_id == utterance_id)
        ]

    async def done(self, utterance_id: str, timeout: float = 20.0) -> ReplyDone:
        found = await wait_for(lambda: self.of(ReplyDone, utterance_id), timeout=timeout)
        return found[0]


async def bus_lag_ms(bus: Bus, n: int = 25, every_s: float = 0.02) -> float:
    """How late a message reaches this process through the NATS server now (p90 of `n`
    pings over about `n * every_s` s): the baseline a cross-process latency is judged
    against in the same run. Idle it is well under a millisecond; beside a CPU hog, every
    hop of every process waits for a core and it grows."""
    inbox = bus.nc.new_inbox()
    lags: list[float] = []
    got = asyncio.Event()

    async def cb(msg) -> None:  # type: ignore[no-untyped-def]
        lags.append((time.perf_counter() - float(msg.data)) * 1000)
        got.set()

    sub = await bus.nc.subscribe(inbox, cb=cb)
    try:
        for _ in range(n):
            got.clear()
            await bus.nc.publish(inbox, str(time.perf_counter()).encode())
            await asyncio.wait_for(got.wait(), 10)
            await asyncio.sleep(every_s)
    finally:
        await sub.unsubscribe()
    lags.sort()
    return lags[int(0.9 * (len(lags) - 1))]


#: How many bus hops' worth of lag a cross-process promise may add (an event goes through
#: a few processes, each scheduled late by about the measured lag, and runs Python in each).
LAG_HOPS = 20


def budget_ms(nominal_ms: float, lag_ms: float) -> float:
    """A latency promise made on an idle machine (`nominal_ms`), widened by the lag measured
    in the same run: as tight as promised when the machine is idle, not flaky when it is not."""
    return nominal_ms + LAG_HOPS * lag_ms
