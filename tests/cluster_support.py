"""Helpers for the cluster tests: replicated streams, turn outcomes read from the stream
(a core subscription misses what is published while its node is down; the stream does not)."""

from __future__ import annotations

import asyncio

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
