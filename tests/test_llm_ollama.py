"""The Ollama backend through the official client, against a real HTTP server speaking
Ollama's protocol (ops.ollama_compat, backed by the embedded model: the tokens are real)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest

from ops.ollama_compat import OllamaCompatServer
from schemas import ControlError, Interrupt, ReplyDone, ReplySentence, ReplyToken
from tests.conftest import ROOT, wait_for
from tests.test_llm_support import Tap, llm_settings, running, transcript
from workers.llm.backends import EmbeddedBackend, OllamaBackend
from workers.llm.worker import LlmWorker
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import free_port, is_listening

NAME = "smollm2:135m"


@pytest.fixture
async def compat() -> AsyncIterator[OllamaCompatServer]:
    server = await OllamaCompatServer(EmbeddedBackend(), NAME, port=0).start()
    try:
        yield server
    finally:
        await server.stop()


def ollama_worker(bus: Bus, settings: Settings, host: str, model: str = NAME, **kw) -> LlmWorker:
    options = llm_settings(backend="ollama", **kw)
    backend = OllamaBackend(host, model, max_tokens=options.max_tokens)
    return LlmWorker(bus, settings, options, backend)


async def test_compat_server_speaks_ollamas_chat_protocol() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ops.ollama_compat", "--port", str(port), "--threads", "1"],
        cwd=ROOT,
    )
    try:
        await wait_for(lambda: is_listening(f"http://127.0.0.1:{port}"), timeout=30)
        host = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{host}/api/version")).json()["version"]
            assert (await http.get(host)).text == "Ollama is running"
        client = ollama.AsyncClient(host=host)
        (model,) = (await client.list()).models
        assert model.model == NAME and model.size > 50_000_000
        assert model.digest.startswith("sha256:")
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        options = {"seed": 1, "num_predict": 24}
        stream = await client.chat(model=NAME, messages=messages, stream=True, options=options)
        parts = [p async for p in stream]
        *tokens, last = parts
        assert tokens and all(not p.done and p.message.role == "assistant" for p in tokens)
        assert last.done and last.done_reason in ("stop", "length")
        assert last.eval_count == len(tokens) and last.prompt_eval_count > 5
        assert "".join(p.message.content for p in tokens).strip()
        whole = await client.chat(model=NAME, messages=messages, options=options)
        assert whole.done and whole.message.content.strip() and whole.eval_count <= 24
        with pytest.raises(ollama.ResponseError) as err:
            async for _ in await client.chat(model="nope", messages=messages, stream=True):
                pass
        assert err.value.status_code == 404
        assert err.value.error == "model 'nope' not found, try pulling it first"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_worker_streams_real_tokens_through_ollama(
    bus: Bus, settings: Settings, compat: OllamaCompatServer
) -> None:
    tap = await Tap().start(bus)
    t = transcript("What is the capital of France?")
    async with running(ollama_worker(bus, settings, compat.url)):
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    assert done.finish_reason in ("stop", "length") and done.model == NAME
    assert done.tokens == len(tap.of(ReplyToken, t.utterance_id)) > 0
    assert done.prompt_tokens > 10 and done.first_token_ms > 0
    assert len(tap.of(ReplySentence, t.utterance_id)) == done.sentences > 0


async def test_ollama_down_is_an_error_event_and_the_worker_goes_on(
    bus: Bus, settings: Settings
) -> None:
    tap = await Tap().start(bus)
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    first, second = transcript("Hello?"), transcript("Hello again?")
    async with running(ollama_worker(bus, settings, host)):
        await bus.publish(first)
        done = await tap.done(first.utterance_id)
        (error,) = tap.of(ControlError, first.utterance_id)
        assert done.finish_reason == "error" and done.tokens == 0
        assert error.code == "llm-unavailable" and error.failed_stage == "llm" and error.retryable
        assert host in error.message and "ollama serve" in error.message
        assert error.cause_event_id == first.event_id
        # Ollama comes up: the same worker answers the next turn.
        server = await OllamaCompatServer(EmbeddedBackend(), NAME, port=port).start()
        try:
            await bus.publish(second)
            done = await tap.done(second.utterance_id)
        finally:
            await server.stop()
    assert done.finish_reason in ("stop", "length") and done.tokens > 0


async def test_model_not_pulled_says_which_pull_to_run(
    bus: Bus, settings: Settings, compat: OllamaCompatServer
) -> None:
    tap = await Tap().start(bus)
    t = transcript("Hello?")
    async with running(ollama_worker(bus, settings, compat.url, model="mistral:7b-instruct")):
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    (error,) = tap.of(ControlError, t.utterance_id)
    assert done.finish_reason == "error"
    assert error.code == "model-missing" and "ollama pull mistral:7b-instruct" in error.message


async def test_interrupt_closes_the_ollama_stream(
    bus: Bus, settings: Settings, compat: OllamaCompatServer
) -> None:
    tap = await Tap().start(bus)
    t = transcript("Tell me a long story about a brave knight, a dragon and a castle.")
    async with running(ollama_worker(bus, settings, compat.url, max_tokens=400)):
        await bus.publish(t)
        await wait_for(lambda: len(tap.of(ReplyToken, t.utterance_id)) >= 3, timeout=20)
        await bus.publish(
            Interrupt(
                endpoint="device", conversation_id=t.conversation_id, utterance_id=t.utterance_id
            )
        )
        done = await tap.done(t.utterance_id)
        # Closing the response stops generation on the server too, as with Ollama.
        await wait_for(lambda: compat.cancelled == 1, timeout=5)
    assert done.finish_reason == "interrupted" and done.tokens < 400
    assert isinstance(done, ReplyDone)
    await asyncio.sleep(0)
