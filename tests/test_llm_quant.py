"""LLM_QUANT: the shipped model rewritten once into a faster weight format, cached, loadable."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from workers.llm.backends import EmbeddedBackend, Generation, embedded_model_path
from workers.llm.config import DEFAULT_SYSTEM_PROMPT
from workers.llm.quantize import model_name, requantized
from workers.runtime.models import ModelNotFoundError


def test_shipped_is_the_file_itself_and_an_unknown_format_is_named(tmp_path: Path) -> None:
    source = embedded_model_path()
    assert requantized(source, "shipped", tmp_path) == source
    assert requantized(source, "", tmp_path) == source
    assert model_name(source, "shipped") == source.stem
    with pytest.raises(ModelNotFoundError, match=r"LLM_QUANT=q5_k: unknown; use one of"):
        requantized(source, "q5_k", tmp_path)
    assert not any(tmp_path.iterdir())


def test_q8_0_is_made_once_and_still_answers(tmp_path: Path) -> None:
    source = embedded_model_path()
    made = requantized(source, "q8_0", tmp_path)
    assert made.name == "SmolLM2-135M-Instruct.Q4_1-as-Q8_0.gguf" and made.is_file()
    assert made.read_bytes()[:4] == b"GGUF"
    stamp = made.stat().st_mtime_ns
    assert requantized(source, "Q8_0", tmp_path) == made
    assert made.stat().st_mtime_ns == stamp, "the cached file was made again"
    assert [p.name for p in made.parent.iterdir()] == [made.name], "a partial file was left"

    async def answer() -> str:
        backend = EmbeddedBackend(made, threads=1)
        try:
            messages = [
                {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": "What is the capital of France?"},
            ]
            pieces = [
                p
                async for p in backend.stream(
                    messages, seed=0, cancel=threading.Event(), gen=Generation(), max_tokens=12
                )
            ]
        finally:
            await backend.aclose()
        return "".join(pieces)

    assert "Paris" in asyncio.run(answer())


def test_a_file_that_cannot_be_converted_says_how_to_go_on(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotFoundError, match=r"could not convert .*LLM_QUANT=shipped"):
        requantized(bad, "q4_0", cache)
    assert not [p for p in cache.rglob("*") if p.is_file()], "a broken file was left behind"
