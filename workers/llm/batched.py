"""Batched decoding: several replies generated together by one llama.cpp context.

Without it, concurrent turns queue behind one generation (four conversations at once waited
~5 s each for the llm). Here one decoder thread owns a context with LLM_PARALLEL sequences
(llama.cpp's parallel sequences, as its `llama-server --parallel` does): each step puts the
next token of every running reply, and the prompt of a new one, into a single `llama_batch`
and evaluates it with one `llama_decode`; a small model on a CPU costs little more per step
for four sequences than for one. Each sequence keeps its slot's KV cache after its reply, so
the next prompt that starts the same way (the system prompt, the conversation so far) is not
evaluated again.

Sampling happens here (greedy, or seeded with the turn's seed at LLM_TEMPERATURE > 0) with
llama.cpp's repeat penalty over the reply's last 64 tokens, so a redelivered transcript gives the
same reply; the cancel flag is checked before every step.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.llm.backends import (
    BackendError,
    EmbeddedBackend,
    Generation,
    Message,
    common_prefix,
    room_left,
)

log = logging.getLogger("voicebus.llm")

#: Tokens of one prompt evaluated per step while other replies are decoding (a long prompt
#: must not stall the replies already speaking for a whole step).
PREFILL_CHUNK = 128
#: llama.cpp's default repeat-penalty window.
PENALTY_LAST_N = 64
#: Context of the Llama object, which this backend does not decode in.
LLAMA_OBJECT_CONTEXT = 64


@dataclass
class _Seq:
    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int
    cancel: threading.Event
    put: Any
    """put(kind, value) onto the caller's event loop."""
    slot: int = -1
    pending: list[int] = field(default_factory=list)
    """Tokens to evaluate next (the prompt's rest, then the last sampled token)."""
    fed: list[int] = field(default_factory=list)
    """Tokens in this slot's KV cache."""
    generated: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    rng: Any = None
    first_out: threading.Event = field(default_factory=threading.Event)
    """The worker has cut this reply's first sentence."""


class BatchedBackend(EmbeddedBackend):
    """The embedded model serving up to `slots` replies at once (LLM_PARALLEL)."""

    def __init__(
        self,
        model_path: str | Path = "",
        *,
        slots: int = 4,
        first_sentences_first: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(model_path, **kw)
        self.slots = slots
        self.first_sentences_first = first_sentences_first
        self._ctx: Any = None
        self._requests: queue.Queue[_Seq | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._cached: list[list[int]] = [[] for _ in range(slots)]
        self._free = list(range(slots))

    def _llama_context_tokens(self) -> int:
        # The Llama object only tokenizes and holds the weights here: replies are decoded in
        # the context below. Its own KV cache at full size was ~45 MB never used.
        return LLAMA_OBJECT_CONTEXT

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp import _internals

        super()._load()  # the model, its tokenizer and chat template
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_tokens * self.slots  # each sequence gets n_ctx / n_seq_max
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = self.slots
        params.n_threads = params.n_threads_batch = self.threads
        self._ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(512, 0, 1)
        self._thread = threading.Thread(target=self._decode_loop, name="llm-batch", daemon=True)
        self._thread.start()

    async def warmup(self, messages: list[Message]) -> None:
        await self.start()
        # Every slot evaluates the system prompt once, together: the first turns are as fast
        # as the later ones whichever slot they get.
        gens = [Generation() for _ in range(self.slots)]

        async def one(gen: Generation) -> None:
            async for _ in self.stream(
                messages, seed=0, cancel=threading.Event(), gen=gen, max_tokens=2
            ):
                pass

        await asyncio.gather(*(one(g) for g in gens))

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
        tokens, _ = self.prompt_tokens(messages)
        gen.prompt_tokens = len(tokens)
        room = room_left(len(tokens), self.context_tokens)
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        abandoned = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, (kind, value))

        seq = _Seq(
            prompt=tokens,
            max_tokens=min(self.max_tokens if max_tokens is None else max_tokens, room),
            temperature=self.temperature if temperature is None else temperature,
            seed=seed,
            cancel=_Either(cancel, abandoned),  # type: ignore[arg-type]
            put=put,
            first_out=gen.first_sentence,
        )
        self._requests.put(seq)
        try:
            while True:
                kind, value = await out.get()
                if kind == "text":
                    if not cancel.is_set():
                        yield value
                elif kind == "error":
                    raise BackendError(f"llama.cpp failed: {value}")
                else:
                    gen.finish_reason = "interrupted" if cancel.is_set() else value
                    return
        finally:
            abandoned.set()

    async def aclose(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        if self._ctx is not None:
            import llama_cpp

            llama_cpp.llama_batch_free(self._batch)
            self._ctx.close()
            self._ctx = None
        await super().aclose()

    # -- the decoder thread ----------------------------------------------------------------

    def _decode_loop(self) -> None:
        waiting: list[_Seq] = []
        running: list[_Seq] = []
        while True:
            block = not running and not waiting
            try:
                while True:
                    item = self._requests.get(block=block)
                    block = False
                    if item is None:
                        for s in running + waiting:
                            s.put("end", "interrupted")
                        return
                    waiting.append(item)
            except queue.Empty:
                pass
            while waiting and self._free:
                running.append(self._admit(waiting.pop(0)))
            for s in [s for s in running if s.cancel.is_set()]:
                self._finish(s, "interrupted", running)
            if not running:
                continue
            try:
                self._step(running, self._turn_of(running))
            except Exception as exc:  # a failed decode ends the replies it carried
                log.exception("batched decode failed")
                for s in list(running):
                    s.put("error", exc)
                    s.fed = []  # the slot's cache is unknown now
                    self._finish(s, "error", running)

    def _admit(self, s: _Seq) -> _Seq:
        """Give `s` the free slot whose cache shares the longest prefix with its prompt."""
        import llama_cpp

        def common(slot: int) -> int:
            return common_prefix(self._cached[slot], s.prompt)

        slot = max(self._free, key=common)
        self._free.remove(slot)
        keep = min(common(slot), len(s.prompt) - 1)  # the last prompt token gives the logits
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, keep, -1)
        s.slot = slot
        s.fed = s.prompt[:keep]
        s.pending = s.prompt[keep:]
        s.rng = np.random.default_rng(s.seed)
        return s

    def _turn_of(self, running: list[_Seq]) -> list[_Seq]:
        """The sequences this step evaluates.

        On a CPU the model is compute-bound: a step of four sequences costs about four steps
        of one, so decoding every reply together delays every first sentence to the end.
        What the users wait for is each reply's first sentence; the rest is spoken from the
        tts's buffer for seconds. So the oldest reply still before its first sentence runs
        alone, then the next (first sentences at 1x, 2x, 3x, 4x one turn's instead of all
        at 4x); with none waiting, the replies decode together.
        """
        if self.first_sentences_first:
            for s in running:  # in admission order
                if not s.first_out.is_set():
                    return [s]
        return running

    def _step(self, running: list[_Seq], turn: list[_Seq]) -> None:
        import llama_cpp

        b = self._batch
        n = 0
        wants: list[tuple[_Seq, int]] = []  # (sequence, index of its logits in the batch)
        # Decoding replies first (one token each), then prompt chunks in the room left.
        for s in sorted(turn, key=lambda s: len(s.pending)):
            take = s.pending[: min(PREFILL_CHUNK, 512 - n)]
            if not take:
                continue
            for j, tok in enumerate(take):
                b.token[n] = tok
                b.pos[n] = len(s.fed) + j
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = s.slot
                b.logits[n] = 0
                n += 1
            s.fed.extend(take)
            del s.pending[: len(take)]
            if not s.pending:
                b.logits[n - 1] = 1
                wants.append((s, n - 1))
        b.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        for s, i in wants:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx.ctx, i), shape=(self._n_vocab,)
            )
            tok = self._sample(s, logits)
            if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                self._finish(s, "stop", running)
                continue
            s.generated.append(tok)
            self._emit(s, tok)
            if len(s.generated) >= s.max_tokens:
                self._finish(s, "length", running)
            else:
                s.pending = [tok]

    def _sample(self, s: _Seq, logits: np.ndarray) -> int:
        x = logits.astype(np.float32, copy=True)
        if self.repeat_penalty != 1.0 and s.generated:
            # As llama-cpp-python's sampler: over the reply's own last tokens, not the prompt.
            recent = np.unique(np.array(s.generated[-PENALTY_LAST_N:]))
            v = x[recent]
            x[recent] = np.where(v > 0, v / self.repeat_penalty, v * self.repeat_penalty)
        if s.temperature <= 0:
            return int(np.argmax(x))
        top = np.argpartition(x, -40)[-40:]  # top-k 40, as llama.cpp's default
        p = np.exp((x[top] - x[top].max()) / s.temperature)
        return int(top[s.rng.choice(len(top), p=p / p.sum())])

    def _emit(self, s: _Seq, tok: int) -> None:
        import llama_cpp

        buf = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._vocab, tok, buf, 64, 0, False)
        s.text.extend(buf.raw[: max(0, size)])
        # Hand over whole UTF-8 characters only (a character may span two tokens).
        try:
            piece = s.text.decode()
            s.text.clear()
        except UnicodeDecodeError as exc:
            piece = bytes(s.text[: exc.start]).decode()
            del s.text[: exc.start]
        if piece:
            s.put("text", piece)

    def _finish(self, s: _Seq, reason: str, running: list[_Seq]) -> None:
        running.remove(s)
        self._cached[s.slot] = s.fed
        self._free.append(s.slot)
        if reason != "error":
            s.put("end", reason)


class _Either:
    """Set when any of its events is set (the caller's cancel, an abandoned stream)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
