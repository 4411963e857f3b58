"""`just bench answers`: do the llm's settings give answers that make sense, in the user's language?

Short spoken-assistant questions, each with the key fact its answer must hold ("What is the
capital of Italy?" -> "Rome"), in English and in four other languages. For each setting
(system prompt, temperature, reply-language instruction on or off, model) every question is
asked through the backend the llm worker uses, with the prompt the worker builds
(`system_prompt_for` + `build_messages`), and the bench prints: accuracy (the key fact is in
the answer), answers in the wrong language (py3langid over the answers of four words or
more), mean length in words, and time to the first token. The embedded SmolLM2-135M always
runs; an Ollama server too when one answers at OLLAMA_HOST (`python -m ops.ollama_compat`
serves the bundled model under Ollama's API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.llm.backends import Backend, BackendError, EmbeddedBackend, Generation, OllamaBackend
from workers.llm.config import DEFAULT_SYSTEM_PROMPT, LlmSettings
from workers.llm.language import system_prompt_for
from workers.llm.memory import build_messages
from workers.llm.worker import turn_seed

# (question, language of the question, facts: the answer must hold one of them)
QUESTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("What is the capital of Italy?", "en", ("rome",)),
    ("What is the capital of France?", "en", ("paris",)),
    ("What is the capital of Japan?", "en", ("tokyo",)),
    ("What is the capital of Germany?", "en", ("berlin",)),
    ("What is the capital of Spain?", "en", ("madrid",)),
    ("How many legs does a spider have?", "en", ("8", "eight")),
    ("How many days are in a week?", "en", ("7", "seven")),
    ("How many legs does a dog have?", "en", ("4", "four")),
    ("What color is the sky on a clear day?", "en", ("blue",)),
    ("What color are ripe bananas?", "en", ("yellow",)),
    ("What is two plus two?", "en", ("4", "four")),
    ("What is ten minus three?", "en", ("7", "seven")),
    ("What is the largest planet in our solar system?", "en", ("jupiter",)),
    ("Which planet is known as the red planet?", "en", ("mars",)),
    ("What do bees make?", "en", ("honey",)),
    ("What is frozen water called?", "en", ("ice",)),
    ("At what temperature in Celsius does water freeze?", "en", ("0", "zero")),
    ("Who wrote Romeo and Juliet?", "en", ("shakespeare",)),
    ("What is the opposite of hot?", "en", ("cold",)),
    ("Which animal says moo?", "en", ("cow", "cows", "cattle")),
    ("How many hours are in a day?", "en", ("24", "twenty-four", "twenty four")),
    ("How many months are in a year?", "en", ("12", "twelve")),
    ("What gas do plants take in from the air?", "en", ("carbon dioxide", "co2")),
    ("What is the tallest animal in the world?", "en", ("giraffe", "giraffes")),
    ("What is the largest ocean on Earth?", "en", ("pacific",)),
    ("What language is spoken in Brazil?", "en", ("portuguese",)),
    ("Which continent is Egypt in?", "en", ("africa",)),
    ("At what temperature in Celsius does water boil?", "en", ("100", "hundred")),
    ("What do you call a baby cat?", "en", ("kitten", "kittens")),
    ("What is the square root of nine?", "en", ("3", "three")),
    ("What is the closest star to the Earth?", "en", ("sun",)),
    ("What color is grass?", "en", ("green",)),
    ("How many wheels does a bicycle have?", "en", ("2", "two")),
    ("What do we call the meal we eat in the morning?", "en", ("breakfast",)),
    ("What is the currency of Japan?", "en", ("yen",)),
    ("Quelle est la capitale de la France ?", "fr", ("paris",)),
    ("Combien de pattes a une araignée ?", "fr", ("8", "huit")),
    ("Was ist die Hauptstadt von Deutschland?", "de", ("berlin",)),
    ("Wie viele Tage hat eine Woche?", "de", ("7", "sieben")),
    ("¿Cuál es la capital de España?", "es", ("madrid",)),
    ("¿De qué color es el cielo?", "es", ("azul",)),
    ("Qual è la capitale dell'Italia?", "it", ("roma",)),
    ("Quante zampe ha un cane?", "it", ("4", "quattro")),
]

PROMPTS = {
    "default": DEFAULT_SYSTEM_PROMPT,  # LLM_SYSTEM_PROMPT's default ("fact" when chosen)
    "one-sentence": (
        "You are a helpful voice assistant. Answer the user's question directly in one "
        "short sentence."
    ),
    "friendly": (  # the default before this benchmark
        "You are a friendly voice assistant. Answer in one to three short, plain spoken "
        "sentences. Never use lists, markdown, emojis or code."
    ),
}

CLASSIFIED_LANGUAGES = ["en", "fr", "de", "es", "it", "pt", "nl"]
BLOCK = 6
"""Questions asked in a row with one setting."""
MIN_WORDS_FOR_LANGUAGE = 4
"""Shorter answers ("Rome.") are left out of the language count: too short to classify."""


@dataclass(frozen=True)
class Setting:
    model: str
    prompt: str
    temperature: float
    language_instruction: bool

    @property
    def label(self) -> str:
        lang = "lang" if self.language_instruction else "nolang"
        return f"{self.model} {self.prompt} t={self.temperature:g} {lang}"


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c))


def holds_fact(answer: str, facts: tuple[str, ...]) -> bool:
    """The answer names one of the facts as a whole word ("8" not in "18")."""
    a = normalise(answer)
    return any(re.search(rf"(?<![\w]){re.escape(normalise(f))}(?![\w])", a) for f in facts)


class LanguageOf:
    """py3langid restricted to the bench's languages (its model ships in the wheel)."""

    def __init__(self) -> None:
        from py3langid.langid import _load_identifier

        self.identifier = _load_identifier(langs=CLASSIFIED_LANGUAGES)

    def __call__(self, text: str) -> str | None:
        if len(text.split()) < MIN_WORDS_FOR_LANGUAGE:
            return None
        return str(self.identifier.classify(text)[0])


async def ask(
    backend: Backend, setting: Setting, question: str, language: str, seed: int, max_tokens: int
) -> dict[str, Any]:
    system = PROMPTS[setting.prompt]
    if setting.language_instruction:
        system = system_prompt_for(system, language)
    messages, _ = build_messages(system, [], question, 2048 - max_tokens, backend.count_tokens)
    pieces: list[str] = []
    t0 = time.perf_counter()
    first = None
    kwargs: dict[str, Any] = {}
    if isinstance(backend, EmbeddedBackend):
        kwargs = {"temperature": setting.temperature, "max_tokens": max_tokens}
    else:
        backend.temperature = setting.temperature  # type: ignore[attr-defined]
    async for piece in backend.stream(
        messages, seed=seed, cancel=threading.Event(), gen=Generation(), **kwargs
    ):
        first = first or time.perf_counter()
        pieces.append(piece)
    end = time.perf_counter()
    return {
        "answer": "".join(pieces).strip(),
        "first_token_ms": 1000 * ((first or end) - t0),
        "total_ms": 1000 * (end - t0),
    }


async def ollama_backend(host: str, model: str, max_tokens: int) -> OllamaBackend | None:
    backend = OllamaBackend(host, model, max_tokens=max_tokens)
    try:
        if not model:
            listing = await backend.client.list()
            if not listing.models:
                raise BackendError("no models pulled")
            backend.model = listing.models[0].model
        await backend.check()
    except (BackendError, ConnectionError, OSError) as exc:
        print(f"bench answers: Ollama at {host} skipped ({exc})", file=sys.stderr)
        await backend.aclose()
        return None
    return backend


def settings_matrix(args: argparse.Namespace, models: list[str]) -> list[Setting]:
    out = []
    for model in models:
        for prompt in args.prompts:
            for temperature in args.temperatures:
                for lang in args.language:
                    out.append(Setting(model, prompt, temperature, lang == "on"))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    options = LlmSettings(_env_file=None)  # type: ignore[call-arg]
    embedded = EmbeddedBackend(
        quant=options.quant,  # LLM_QUANT: grade the weight format the worker would run
        threads=args.threads or options.threads,
        max_tokens=args.max_tokens,
    )
    await embedded.start()
    await embedded.warmup([{"role": "user", "content": "Hello."}])
    backends: dict[str, Backend] = {f"embedded:{embedded.model}": embedded}
    if args.ollama != "off":
        host = options.ollama_host if args.ollama == "auto" else args.ollama
        ollama = await ollama_backend(host, args.ollama_model, args.max_tokens)
        if ollama is not None:
            backends[f"ollama:{ollama.model}"] = ollama
    language_of = LanguageOf()
    questions = QUESTIONS[: args.limit] if args.limit else QUESTIONS
    matrix = settings_matrix(args, list(backends))
    rows: dict[str, list[dict[str, Any]]] = {s.label: [] for s in matrix}
    try:
        # A block of questions per setting, every setting in turn (the order rotated per
        # block), so machine load drifts over all settings alike; within a block the system
        # prompt stays the same, so llama.cpp reuses it as the worker does turn after turn.
        blocks = [
            (seed, start) for seed in range(args.seeds) for start in range(0, len(questions), BLOCK)
        ]
        for b, (seed, start) in enumerate(blocks):
            order = matrix[b % len(matrix) :] + matrix[: b % len(matrix)]
            for s in order:
                if seed and s.temperature == 0:
                    continue  # greedy: another seed gives the same answer
                for i in range(start, min(start + BLOCK, len(questions))):
                    question, language, facts = questions[i]
                    r = await ask(
                        backends[s.model],
                        s,
                        question,
                        language,
                        turn_seed(f"bench-answers/{seed}/{i}" if seed else f"bench-answers/{i}"),
                        args.max_tokens,
                    )
                    heard = language_of(r["answer"])
                    rows[s.label].append(
                        {
                            **r,
                            "index": i,
                            "seed": seed,
                            "question": question,
                            "language": language,
                            "correct": holds_fact(r["answer"], facts),
                            "answer_language": heard,
                            "wrong_language": heard is not None and heard != language,
                            "words": len(r["answer"].split()),
                        }
                    )
                print(".", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        for rs in rows.values():
            rs.sort(key=lambda r: (r["seed"], r["index"]))
    finally:
        for b in backends.values():
            await b.aclose()
    summary = {label: summarise(rs) for label, rs in rows.items()}
    return {
        "questions": len(questions),
        "seeds": args.seeds,
        "max_tokens": args.max_tokens,
        "prompts": {k: PROMPTS[k] for k in args.prompts},
        "summary": summary,
        "answers": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    en = [r for r in rows if r["language"] == "en"]
    other = [r for r in rows if r["language"] != "en"]
    classified = [r for r in rows if r["answer_language"] is not None]
    return {
        "accuracy": round(sum(r["correct"] for r in rows) / len(rows), 3),
        "accuracy_en": round(sum(r["correct"] for r in en) / max(len(en), 1), 3),
        "accuracy_other": round(sum(r["correct"] for r in other) / max(len(other), 1), 3),
        "wrong_language": sum(r["wrong_language"] for r in rows),
        "wrong_language_en": sum(r["wrong_language"] for r in en),
        "wrong_language_other": sum(r["wrong_language"] for r in other),
        "classified": len(classified),
        "mean_words": round(statistics.fmean(r["words"] for r in rows), 1),
        "first_token_ms_p50": round(statistics.median(r["first_token_ms"] for r in rows), 1),
        "total_ms_p50": round(statistics.median(r["total_ms"] for r in rows), 1),
    }


def print_report(report: dict[str, Any]) -> None:
    n = report["questions"]
    print(
        f"\n{n} questions per setting ({report['seeds']} samples each at temperature > 0); "
        "wrong language counted over answers of 4+ words"
    )
    width = max(len(label) for label in report["summary"]) + 2
    head = f"{'setting':{width}}{'acc':>6}{'acc en':>8}{'acc other':>10}"
    print(f"{head}{'wrong lang':>12}{'words':>7}{'1st tok ms':>11}{'total ms':>10}")
    ranked = sorted(
        report["summary"].items(),
        key=lambda kv: (-kv[1]["accuracy"], kv[1]["wrong_language"], kv[1]["mean_words"]),
    )
    for label, s in ranked:
        wrong = f"{s['wrong_language']}/{s['classified']}"
        print(
            f"{label:{width}}{s['accuracy']:>6.0%}{s['accuracy_en']:>8.0%}{s['accuracy_other']:>10.0%}"
            f"{wrong:>12}{s['mean_words']:>7.1f}{s['first_token_ms_p50']:>11.1f}"
            f"{s['total_ms_p50']:>10.1f}"
        )
    best = ranked[0][0]
    print(f"best: {best} (accuracy, then fewest wrong-language answers, then shortest)")
    for label, _ in ranked[:1] + ranked[-1:]:
        print(f"\n{label}: sample answers")
        for r in report["answers"][label][:: max(1, n // 8)]:
            mark = "ok " if r["correct"] else "NO "
            print(f"  {mark}{r['question']!r} -> {r['answer'][:90]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="just bench answers", description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", nargs="+", choices=list(PROMPTS), default=list(PROMPTS))
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.3])
    ap.add_argument(
        "--language", nargs="+", choices=["on", "off"], default=["on", "off"],
        help="reply-language instruction in the system prompt",
    )  # fmt: skip
    ap.add_argument("--max-tokens", type=int, default=120, help="LLM_MAX_TOKENS (default 120)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: LLM_THREADS)")
    ap.add_argument("--ollama", default="auto", help="auto (OLLAMA_HOST), off, or a URL")
    ap.add_argument("--ollama-model", default="", help="default: the first model it lists")
    ap.add_argument("--limit", type=int, default=0, help="first N questions only")
    ap.add_argument(
        "--seeds", type=int, default=1, help="samples per question at temperature > 0 (default 1)"
    )
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ap.add_argument("--out", help="also write the JSON report (with every answer) here")
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
