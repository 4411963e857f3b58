"""`just bench quant`: the embedded model in each weight format (LLM_QUANT), side by side.

For each format, in one process and with the threads the llm worker uses:
- first token of a turn: the system prompt is cached (as after the worker's warm-up), the
  question and its chat markup are evaluated, then one token is sampled;
- decode speed of one reply alone (tokens/s);
- four replies at once through the batched backend (LLM_PARALLEL=4): tokens/s of all four
  together, and its ratio to one reply alone on the same backend (1.0: a step of four costs
  four steps of one; 4.0: four for the price of one).
Formats are alternated within every round. What the model answers in each format is
printed for the first question; `LLM_QUANT=... just bench answers` grades the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from typing import Any

from workers.llm.backends import EmbeddedBackend, Generation, default_threads
from workers.llm.batched import BatchedBackend
from workers.llm.config import DEFAULT_SYSTEM_PROMPT

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Which planet is the largest in our solar system?",
    "How many days are there in a leap year?",
    "What language is spoken in Brazil?",
    "What is the chemical symbol for gold?",
]


def messages(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


async def one_reply(backend: Any, question: str, max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = 0.0
    pieces: list[str] = []
    async for piece in backend.stream(
        messages(question),
        seed=0,
        cancel=threading.Event(),
        gen=Generation(),
        max_tokens=max_tokens,
    ):
        if not pieces:
            first = time.perf_counter() - t0
        pieces.append(piece)
    total = time.perf_counter() - t0
    rest = len(pieces) - 1
    return {
        "first_token_ms": first * 1000,
        "tokens": len(pieces),
        "tokens_per_s": rest / (total - first) if rest > 0 and total > first else float("nan"),
        "text": "".join(pieces),
        "seconds": total,
    }


async def together(backend: BatchedBackend, questions: list[str], max_tokens: int) -> float:
    """Tokens per second of all the replies generated at once."""
    t0 = time.perf_counter()
    rows = await asyncio.gather(*(one_reply(backend, q, max_tokens) for q in questions))
    return sum(r["tokens"] for r in rows) / (time.perf_counter() - t0)


class Side:
    def __init__(self, quant: str, threads: int, slots: int) -> None:
        self.quant = quant
        self.single = EmbeddedBackend(quant=quant, threads=threads)
        self.batched = BatchedBackend(quant=quant, threads=threads, slots=slots)
        self.first: list[float] = []
        self.speed: list[float] = []
        self.alone: list[float] = []
        self.four: list[float] = []
        self.answer = ""

    async def start(self) -> None:
        await self.single.warmup(messages("Hello."))
        await self.batched.warmup(messages("Hello."))

    async def round(self, questions: list[str], max_tokens: int) -> None:
        for q in questions:
            r = await one_reply(self.single, q, max_tokens)
            self.first.append(r["first_token_ms"])
            self.speed.append(r["tokens_per_s"])
            self.answer = self.answer or r["text"]
        self.alone.append(await together(self.batched, questions[:1], max_tokens))
        self.four.append(await together(self.batched, questions[: self.batched.slots], max_tokens))

    def report(self) -> dict[str, Any]:
        med = statistics.median
        ratios = [f / a for f, a in zip(self.four, self.alone, strict=True)]
        return {
            "model": self.single.model,
            "first_token_ms": {
                "p50": med(self.first),
                "min": min(self.first),
                "max": max(self.first),
            },
            "tokens_per_s": med(self.speed),
            "batched_alone_tokens_per_s": med(self.alone),
            "batched_four_tokens_per_s": med(self.four),
            "four_vs_alone": {"p50": med(ratios), "min": min(ratios), "max": max(ratios)},
            "answer": self.answer,
        }

    async def aclose(self) -> None:
        await self.single.aclose()
        await self.batched.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or default_threads()
    sides = [Side(q, threads, args.slots) for q in args.quants]
    try:
        for s in sides:
            print(f"bench quant: loading {s.single.model} ...", file=sys.stderr)
            await s.start()
        for r in range(args.rounds):
            # Rotate which format goes first, so none always runs on a cooler machine.
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for s in order:
                await s.round(QUESTIONS[: args.questions], args.max_tokens)
            print(f"bench quant: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for s in sides:
            await s.aclose()
    return {"threads": threads, "slots": args.slots, "rounds": args.rounds} | {
        s.quant: s.report() for s in sides
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="just bench quant", description=__doc__.splitlines()[0])
    ap.add_argument("--quants", nargs="+", default=["shipped", "q8_0", "q4_0"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--questions", type=int, default=4, help="questions per round and format")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--slots", type=int, default=4, help="replies at once (LLM_PARALLEL)")
    ap.add_argument("--threads", type=int, default=0, help="0: as the llm worker (cores - 1)")
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    base = report[args.quants[0]]
    print(f"{'format':<44} {'first token p50':>16} {'tok/s':>7} {'4 at once':>10} {'vs 1':>6}")
    for q in args.quants:
        r = report[q]
        print(
            f"{r['model']:<44} {r['first_token_ms']['p50']:>11.0f} ms "
            f"({r['first_token_ms']['p50'] / base['first_token_ms']['p50']:.2f}x) "
            f"{r['tokens_per_s']:>6.1f} {r['batched_four_tokens_per_s']:>9.1f} "
            f"{r['four_vs_alone']['p50']:>5.2f}x"
        )
    for q in args.quants:
        print(f"  {q}: {report[q]['answer'].strip()!r}")
    if args.json:
        print(json.dumps(report))
    return 0
