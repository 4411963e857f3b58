"""`just bench llm`: time to first token and first sentence, through the bus vs. direct.

Same prompts, same run, same seeds, alternating:

- direct: the embedded backend called in this process (`EmbeddedBackend.stream` + the
  sentence splitter), from the call to the first token / first speakable sentence;
- bus: a stt.transcript published to NATS JetStream, an llm worker process (same model,
  same settings), from the publish to the first llm.reply-token / llm.reply-sentence
  arriving back here over the bus.

Prints p50/p95 of each and the bus/direct ratio. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ops.bench.stats import pct
from schemas import ReplyDone, ReplySentence, ReplyToken, Transcript, decode, new_id
from workers.llm.backends import EmbeddedBackend, Generation
from workers.llm.config import LlmSettings
from workers.llm.sentences import SentenceSplitter
from workers.llm.worker import turn_seed
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import NatsServer, free_port
from workers.runtime.procs import WorkerProcess
from workers.runtime.streams import ensure_streams

PROMPTS = [
    "What is the capital of France?",
    "How do airplanes fly?",
    "Give me a tip for sleeping better.",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "Tell me something interesting about octopuses.",
]


async def direct_turn(
    backend: EmbeddedBackend, system: str, question: str, utterance_id: str
) -> dict[str, float]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    splitter = SentenceSplitter()
    t0 = time.perf_counter()
    first_token = first_sentence = 0.0
    tokens = 0
    async for piece in backend.stream(
        messages, seed=turn_seed(utterance_id), cancel=threading.Event(), gen=Generation()
    ):
        tokens += 1
        first_token = first_token or time.perf_counter()
        if splitter.push(piece) and not first_sentence:
            first_sentence = time.perf_counter()
    if splitter.flush() and not first_sentence:
        first_sentence = time.perf_counter()
    end = time.perf_counter()
    return {
        "first_token_ms": 1000 * (first_token - t0),
        "first_sentence_ms": 1000 * ((first_sentence or end) - t0),
        "tokens": tokens,
        "tokens_per_s": (tokens - 1) / (end - first_token) if tokens > 1 else 0.0,
    }


class BusClient:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.first: dict[tuple[str, str], float] = {}
        self.done: dict[str, asyncio.Future[ReplyDone]] = {}

    async def start(self) -> BusClient:
        async def cb(msg: Any) -> None:
            now = time.perf_counter()
            ev = decode(msg.data)
            if isinstance(ev, ReplyToken | ReplySentence):
                self.first.setdefault((ev.utterance_id, ev.type), now)
            elif isinstance(ev, ReplyDone) and ev.utterance_id in self.done:
                if not self.done[ev.utterance_id].done():
                    self.done[ev.utterance_id].set_result(ev)

        await self.bus.nc.subscribe("voice.*.*.llm.>", cb=cb, pending_bytes_limit=-1)
        await self.bus.nc.flush()
        return self

    async def turn(self, question: str, utterance_id: str) -> dict[str, float]:
        t = Transcript(
            endpoint="device",
            conversation_id=new_id(),
            utterance_id=utterance_id,
            text=question,
            producer="bench",
        )
        self.done[utterance_id] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await self.bus.publish(t)
        done = await asyncio.wait_for(self.done[utterance_id], 60)
        end = time.perf_counter()
        return {
            "first_token_ms": 1000 * (self.first[(utterance_id, ReplyToken.type)] - t0),
            "first_sentence_ms": 1000
            * (self.first.get((utterance_id, ReplySentence.type), end) - t0),
            "tokens": done.tokens,
            "tokens_per_s": done.tokens_per_s,
            "worker_first_token_ms": done.first_token_ms,
        }


def summary(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in rows]
    return {
        "p50": statistics.median(values),
        "p95": pct(values, 0.95),
        "mean": statistics.fmean(values),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    options = LlmSettings(_env_file=None, max_tokens=args.max_tokens, threads=2)  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        work = Path(tmp)
        server = NatsServer(free_port(), work / "nats").start()
        settings = Settings(
            nats_url=server.url,
            data_dir=work / "data",
            database_url=f"sqlite:///{work / 'voice.db'}",
            _env_file=None,  # type: ignore[call-arg]
        )
        proc = WorkerProcess(
            "llm",
            settings,
            env={
                "LLM_MAX_TOKENS": str(args.max_tokens),
                "LLM_THREADS": "2",
                "LLM_BACKEND": "embedded",
            },
            log_file=work / "llm.log",
        )
        bus = await Bus.connect(settings, name="bench-llm")
        backend = EmbeddedBackend(threads=2, max_tokens=args.max_tokens)
        try:
            await ensure_streams(bus)
            proc.start()
            print("bench llm: loading the model (here and in the worker) ...", file=sys.stderr)
            await backend.start()
            await backend.warmup(
                [
                    {"role": "system", "content": options.system_prompt},
                    {"role": "user", "content": "Hello."},
                ]
            )
            await proc.wait_consumer(bus, timeout=120)
            client = await BusClient(bus).start()
            direct: list[dict[str, float]] = []
            via_bus: list[dict[str, float]] = []
            for rep in range(args.reps):
                for i, question in enumerate(PROMPTS):
                    utt = new_id()
                    # Alternate which path goes first so neither always follows the other.
                    if (rep + i) % 2:
                        via_bus.append(await client.turn(question, utt))
                        direct.append(
                            await direct_turn(backend, options.system_prompt, question, utt)
                        )
                    else:
                        direct.append(
                            await direct_turn(backend, options.system_prompt, question, utt)
                        )
                        via_bus.append(await client.turn(question, utt))
                print(f"bench llm: round {rep + 1}/{args.reps} done", file=sys.stderr)
        finally:
            await backend.aclose()
            await bus.close()
            proc.stop()
            server.stop()
    report: dict[str, Any] = {
        "turns": len(direct),
        "max_tokens": args.max_tokens,
        "model": backend.model,
    }
    for name, rows in (("direct", direct), ("bus", via_bus)):
        keys = ("first_token_ms", "first_sentence_ms", "tokens_per_s")
        report[name] = {k: summary(rows, k) for k in keys}
    report["bus"]["worker_first_token_ms"] = summary(via_bus, "worker_first_token_ms")
    for key in ("first_token_ms", "first_sentence_ms"):
        report[f"ratio_{key}_p50"] = report["bus"][key]["p50"] / report["direct"][key]["p50"]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench llm", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="rounds over the prompts (default 3)")
    ap.add_argument("--max-tokens", type=int, default=48, help="reply length (default 48)")
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    d, b = report["direct"], report["bus"]
    print(f"\nLLM {report['model']}, {report['turns']} turns per path, 2 threads, same seeds")
    print(f"{'path':34} {'first token p50/p95':>22} {'first sentence p50/p95':>25} {'tok/s':>6}")
    for name, r in (("direct: backend.stream()", d), ("bus: transcript -> NATS -> llm", b)):
        ft, fs = r["first_token_ms"], r["first_sentence_ms"]
        tokens = f"{ft['p50']:9.1f} / {ft['p95']:7.1f} ms"
        speed = r["tokens_per_s"]["p50"]
        print(f"{name:34} {tokens} {fs['p50']:10.1f} / {fs['p95']:7.1f} ms {speed:6.0f}")
    w = b["worker_first_token_ms"]
    print(f"{'  (inside the worker)':34} {w['p50']:9.1f} / {w['p95']:7.1f} ms")
    print(
        f"bus / direct (p50): first token x{report['ratio_first_token_ms_p50']:.2f} "
        f"(+{b['first_token_ms']['p50'] - d['first_token_ms']['p50']:.1f} ms), "
        f"first sentence x{report['ratio_first_sentence_ms_p50']:.2f} "
        f"(+{b['first_sentence_ms']['p50'] - d['first_sentence_ms']['p50']:.1f} ms)"
    )
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
