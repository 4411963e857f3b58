"""The embedded backend: a long prompt does not hold an interrupt (or the worker's stop)."""

from __future__ import annotations

import asyncio
import threading
import time

from workers.llm.backends import EmbeddedBackend, Generation
from workers.llm.config import DEFAULT_SYSTEM_PROMPT


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": text}]


async def answer(
    backend: EmbeddedBackend, text: str, *, cancel_after: float | None = None
) -> tuple[str, Generation, float]:
    cancel, gen = threading.Event(), Generation()
    if cancel_after is not None:
        threading.Timer(cancel_after, cancel.set).start()
    t0 = time.monotonic()
    pieces = [
        p async for p in backend.stream(ask(text), seed=0, cancel=cancel, gen=gen, max_tokens=12)
    ]
    return "".join(pieces), gen, time.monotonic() - t0


def test_an_interrupt_during_a_long_prompt_ends_the_turn_before_the_prompt_is_read() -> None:
    async def main() -> None:
        backend = EmbeddedBackend(threads=1)
        try:
            await backend.warmup(ask("Hello."))
            # ~900 prompt tokens each (14 chunks); different words, so the second is not cached.
            _, full, whole = await answer(backend, "why " * 900)
            assert full.prompt_tokens > 800 and full.finish_reason in ("stop", "length")
            text, gen, cut = await answer(backend, "how " * 900, cancel_after=0.05)
            assert gen.finish_reason == "interrupted" and text == ""
            # Judged against the whole prompt's time in this run, on this machine's load:
            # before, the prompt was read in one call and the interrupt waited for all of it.
            assert cut < whole / 3, f"interrupt took {cut:.2f} s of a {whole:.2f} s prompt"
            # What was read of it stays usable: the next turn is answered from a sound cache.
            text, gen, _ = await answer(backend, "What is the capital of France?")
            assert "Paris" in text and gen.finish_reason in ("stop", "length")
        finally:
            await backend.aclose()

    asyncio.run(main())
