"""Helpers for the cluster tests: replicated streams, turn outcomes read from the stream
(a core subscription misses what is published while its node is down; the stream does not)."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from schemas import ReplyDone, Transcript
from workers.runtime.bus import Bus


async def reply_done(bus: Bus, t: Transcript, timeout: float) -> ReplyDone:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        done = await bus.last(t.endpoint, t.conversation_id, ReplyDone.type)
        if isinstance(done, ReplyDone) and done.utterance_id == t.utterance_id:
            return done
        await asyncio.sleep(0.1)
    raise AssertionError(f"no llm.reply-done for {t.utterance_id} within {timeout}s")


async def wait_in_sync(bus: Bus, consumers: list[str], timeout: float = 60) -> None:
    """Until the stream and `consumers` have a leader and every replica is online and current.

    A restarted node is listening long before it has caught up with the raft groups: kill
    another node before then and two of three are effectively down (seen under load: the
    llm's consumer had no leader for over a minute). Rolling restarts wait for this."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = "no answer"
    while loop.time() < deadline:
        try:
            infos = [await bus.js.stream_info(bus.stream)]
            infos += [await bus.js.consumer_info(bus.stream, c) for c in consumers]
            lagging = [
                f"{getattr(i, 'name', None) or bus.stream}: "
                + ("no leader" if not i.cluster.leader else f"{p.name} behind")
                for i in infos
                if i.cluster is not None
                for p in (i.cluster.replicas or [None])
                if not i.cluster.leader or (p is not None and (p.offline or not p.current))
            ]
            if not lagging:
                return
            state = ", ".join(lagging)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            state = repr(exc)
        await asyncio.sleep(0.2)
    raise AssertionError(f"cluster not in sync within {timeout}s: {state}")
