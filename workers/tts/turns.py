"""Whose synthesis step runs next when several replies are spoken at once."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator


class FirstAudioFirst:
    """One synthesis step at a time in this process (concurrent replies take turns piece by
    piece instead of fighting over the cores), and a reply's first piece goes before the
    later pieces of replies already speaking: a user is waiting in silence for the first,
    while the others play from audio already made (a sentence is seconds of speech, a piece
    a tenth of that to synthesize). Among equals, first come first served.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._busy = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._n = 0

    @contextlib.asynccontextmanager
    async def turn(self, first: bool) -> AsyncIterator[None]:
        if self._busy:
            fut = asyncio.get_running_loop().create_future()
            self._n += 1
            heapq.heappush(self._waiters, (0 if first and self.enabled else 1, self._n, fut))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # handed over just as it was cancelled: pass it on
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # handed over: still busy
                return
        self._busy = False
