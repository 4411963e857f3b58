"""A stalled, silent, cut or babbling Ollama ends the turn out loud; the llm goes on.

Against tests.ollama_faults: real HTTP and NDJSON through the official client, with the
fault chosen per request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas import ControlError, Interrupt, ReplyToken
from tests.conftest import wait_for
from tests.ollama_faults import Fault, FaultyOllama
from tests.test_llm_support import Tap, llm_settings, running, transcript
from workers.llm.backends import OllamaBackend
from workers.llm.worker import LlmWorker
from workers.runtime.bus import Bus
from workers.runtime.config import Settings


@pytest.fixture
async def faulty(request: pytest.FixtureRequest) -> AsyncIterator[FaultyOllama]:
    server = await FaultyOllama(request.param).start()
    try:
        yield server
    finally:
        await server.stop()


def worker(bus: Bus, settings: Settings, server: FaultyOllama, **timeouts: float) -> LlmWorker:
    backend = OllamaBackend(server.url, server.name, max_tokens=48, **timeouts)
    return LlmWorker(bus, settings, llm_settings(backend="ollama"), backend)


SCRIPT = [
    Fault(3, "stall"),
    Fault(0, "silent"),
    Fault(3, "garbage"),
    Fault(3, "disconnect"),
    Fault(5, "done"),
]


@pytest.mark.parametrize("faulty", [SCRIPT], indirect=True)
async def test_each_fault_ends_its_turn_with_an_error_and_the_next_turn_is_answered(
    bus: Bus, settings: Settings, faulty: FaultyOllama
) -> None:
    tap = await Tap().start(bus)
    expected = [
        ("llm-timeout", "stalled"),
        ("llm-timeout", "no first token"),
        ("llm-failed", "cannot read"),
        ("llm-unavailable", faulty.url),
    ]
    w = worker(bus, settings, faulty, first_token_timeout_s=1.0, stall_timeout_s=1.0)
    async with running(w):
        for code, words in expected:
            t = transcript("Hello?")
            await bus.publish(t)
            done = await tap.done(t.utterance_id, timeout=20)
            (error,) = tap.of(ControlError, t.utterance_id)
            assert done.finish_reason == "error", (code, done)
            assert (error.code, error.failed_stage) == (code, "llm"), error
            assert words in error.message and error.cause_event_id == t.event_id
        # Nothing is left in flight: the same worker answers the next turn.
        t = transcript("Hello again?")
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    assert done.finish_reason == "stop" and done.tokens == 5
    assert done.text == " r5w0 r5w1 r5w2 r5w3. r5w4"
    assert not tap.of(ControlError, t.utterance_id)
    assert faulty.requests == 5
    # The stalled, silent and garbage responses were closed by the client, not left open.
    await wait_for(lambda: faulty.closed_by_client == 3, timeout=5)


@pytest.mark.parametrize("faulty", [[Fault(3, "stall"), Fault(0, "silent")]], indirect=True)
async def test_an_interrupt_ends_a_stalled_turn_at_once(
    bus: Bus, settings: Settings, faulty: FaultyOllama
) -> None:
    tap = await Tap().start(bus)
    # Timeouts far longer than the waits below: only the interrupt can end these turns.
    w = worker(bus, settings, faulty, first_token_timeout_s=120.0, stall_timeout_s=120.0)
    async with running(w):
        for tokens in (3, 0):
            t = transcript("Tell me a story.")
            await bus.publish(t)
            await wait_for(lambda t=t, n=tokens: faulty.requests == (2 if n == 0 else 1))
            await wait_for(lambda t=t, n=tokens: len(tap.of(ReplyToken, t.utterance_id)) == n)
            await bus.publish(
                Interrupt(
                    endpoint="device",
                    conversation_id=t.conversation_id,
                    utterance_id=t.utterance_id,
                )
            )
            done = await tap.done(t.utterance_id, timeout=10)
            assert done.finish_reason == "interrupted" and done.tokens == tokens
            assert not tap.of(ControlError, t.utterance_id)
    await wait_for(lambda: faulty.closed_by_client == 2, timeout=5)
