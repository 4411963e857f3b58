"""The reply's language: the transcript's, said to the model as one line of its system prompt.

Whisper names the language it heard (`stt.transcript.language`, an ISO 639-1 code, with a
probability). A small model left to itself drifts: with no instruction SmolLM2-135M answered
an English question in French. `just bench answers` measures the effect.
"""

from __future__ import annotations

LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
"""Whisper's codes of the languages it knows best, as the model should read them."""

MIN_LANGUAGE_PROBABILITY = 0.5
"""Below this Whisper was guessing (a word or two): no instruction rather than a wrong one."""


def language_instruction(language: str, probability: float = 1.0) -> str:
    """The instruction for a language code ("fr": "Reply in French."); "" when unknown or unsure.

    `probability` 0 means "not measured" (a typed question, a forced language) and counts as
    certain."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    name = LANGUAGE_NAMES.get(code)
    if name is None or 0 < probability < MIN_LANGUAGE_PROBABILITY:
        return ""
    return f"Reply in {name}."


def system_prompt_for(system_prompt: str, language: str, probability: float = 1.0) -> str:
    """The system prompt with the reply's language appended (unchanged when unknown)."""
    instruction = language_instruction(language, probability)
    if not instruction:
        return system_prompt
    return f"{system_prompt.rstrip()} {instruction}" if system_prompt.strip() else instruction
