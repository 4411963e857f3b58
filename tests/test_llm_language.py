"""The reply follows the language of the user's transcript; the defaults answer sensibly.

Real SmolLM2-135M through the llm worker on a real nats-server. The defaults were chosen by
`just bench answers` (README: "Answers that make sense").
"""

from __future__ import annotations

from schemas import Transcript, new_id
from tests.test_llm_support import Tap, llm_settings, running
from workers.llm.backends import EmbeddedBackend
from workers.llm.language import language_instruction, system_prompt_for
from workers.llm.memory import build_messages
from workers.llm.worker import LlmWorker
from workers.runtime.bus import Bus
from workers.runtime.config import Settings


def spoken(text: str, language: str, probability: float = 0.95) -> Transcript:
    return Transcript(
        endpoint="device",
        conversation_id=new_id()[:12],
        utterance_id=new_id(),
        text=text,
        producer="stt-test",
        language=language,
        language_probability=probability,
        confidence=0.9,
    )


def test_the_transcripts_language_becomes_one_line_of_the_system_prompt():
    assert language_instruction("fr") == "Reply in French."
    assert language_instruction("EN") == "Reply in English."
    assert language_instruction("zh-CN") == "Reply in Chinese."
    assert language_instruction("") == ""  # typed question, no language known
    assert language_instruction("xx") == ""
    assert language_instruction("de", probability=0.3) == ""  # Whisper was guessing
    assert language_instruction("de", probability=0.0) == "Reply in German."  # not measured
    assert system_prompt_for("Be brief.", "es") == "Be brief. Reply in Spanish."
    assert system_prompt_for("Be brief.", "") == "Be brief."
    assert system_prompt_for("", "it") == "Reply in Italian."


async def test_worker_prompt_carries_the_reply_language(bus: Bus, settings: Settings) -> None:
    options = llm_settings()
    backend = EmbeddedBackend(max_tokens=options.max_tokens)
    tap = await Tap().start(bus)
    t = spoken("Quelle est la capitale de la France ?", "fr")
    async with running(LlmWorker(bus, settings, options, backend)):
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
        with_language, _ = build_messages(
            system_prompt_for(options.system_prompt, "fr"), [], t.text, 4096, backend.count_tokens
        )
        without, _ = build_messages(options.system_prompt, [], t.text, 4096, backend.count_tokens)
        assert with_language[0]["content"].endswith("Reply in French.")
        assert done.prompt_tokens == len(backend.prompt_tokens(with_language)[0])
        assert done.prompt_tokens > len(backend.prompt_tokens(without)[0])


async def test_default_settings_answer_the_capital_of_italy_in_english(
    bus: Bus, settings: Settings
) -> None:
    """With the old defaults SmolLM2 said "Il capo di Italy!"."""
    tap = await Tap().start(bus)
    options = llm_settings(max_tokens=40)
    backend = EmbeddedBackend(max_tokens=options.max_tokens, temperature=options.temperature)
    questions = [
        ("What is the capital of Italy?", "rome"),
        ("How many legs does a spider have?", "8"),
    ]
    async with running(LlmWorker(bus, settings, options, backend)):
        for question, fact in questions:
            t = spoken(question, "en")
            await bus.publish(t)
            done = await tap.done(t.utterance_id)
            assert fact in done.text.lower(), done.text
            assert not any(w in done.text.lower().split() for w in ("il", "di", "le", "est"))
