"""Whose synthesis step runs next when several replies are spoken at once."""

from __future__ import annotations

import asyncio

from workers.tts.turns import FirstAudioFirst


async def _order(turns: FirstAudioFirst, waiters: list[tuple[str, bool]]) -> list[str]:
    """One step holds the turn while `waiters` (name, first piece?) queue up in this order;
    the order in which they get it."""
    got: list[str] = []
    release = asyncio.Event()

    async def step(name: str, first: bool) -> None:
        async with turns.turn(first):
            got.append(name)
            if name == "holder":
                await release.wait()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(step("holder", False))]
    await asyncio.sleep(0)
    for name, first in waiters:
        tasks.append(asyncio.create_task(step(name, first)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    return got


QUEUE = [("a2", False), ("b2", False), ("c1", True), ("d1", True), ("a3", False)]


async def test_a_replys_first_piece_goes_before_the_later_pieces_of_others() -> None:
    got = await _order(FirstAudioFirst(), QUEUE)
    assert got == ["holder", "c1", "d1", "a2", "b2", "a3"]


async def test_off_it_is_first_come_first_served() -> None:
    got = await _order(FirstAudioFirst(enabled=False), QUEUE)
    assert got == ["holder", "a2", "b2", "c1", "d1", "a3"]


async def test_a_waiter_cancelled_never_holds_the_turn_and_the_next_gets_it() -> None:
    turns = FirstAudioFirst()
    order: list[str] = []
    release = asyncio.Event()

    async def step(name: str, first: bool, hold: asyncio.Event | None = None) -> None:
        async with turns.turn(first):
            order.append(name)
            if hold is not None:
                await hold.wait()

    holder = asyncio.create_task(step("holder", False, release))
    await asyncio.sleep(0)
    gone = asyncio.create_task(step("gone", True))
    later = asyncio.create_task(step("later", False))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(holder, later)
    assert order == ["holder", "later"]
    # Free again: the next step runs at once.
    await asyncio.wait_for(step("again", False), 1)
    assert order[-1] == "again"


async def test_a_waiter_cancelled_as_the_turn_is_handed_to_it_passes_it_on() -> None:
    turns = FirstAudioFirst()
    order: list[str] = []

    async def step(name: str) -> None:
        async with turns.turn(False):
            order.append(name)

    held = turns.turn(False)
    await held.__aenter__()
    unlucky = asyncio.create_task(step("unlucky"))
    after = asyncio.create_task(step("after"))
    await asyncio.sleep(0)
    await held.__aexit__(None, None, None)  # hands the turn to `unlucky`, not yet resumed
    unlucky.cancel()  # in the same step: it wakes up cancelled, holding the turn
    await asyncio.wait_for(after, 1)
    assert order == ["after"]
    assert unlucky.cancelled()
