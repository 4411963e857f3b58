"""`just bench tts`: time to first audio and real-time factor, through the bus vs. Piper direct.

Same sentences, same run, side by side:
- direct: `PiperVoice.synthesize(sentence)` in this process (the floor);
- bus, whole sentences: a tts worker process with clause splitting off, so the difference
  from direct is what the bus and the worker add (publish, JetStream, pull, chunking);
- bus, defaults: the same worker as shipped (a reply's first sentence split at clauses).
Each sentence is its own reply, sent one at a time. First audio through the bus = from
publishing llm.reply-sentence to the first tts.audio-chunk arriving here; its RTF = from
publishing to tts.sentence-done, divided by the audio's duration.

`--backend xtts`: XTTS v2 against Piper, both called in this process, alternated sentence by
sentence (the order flips every round). Without `--xtts-model-dir` it builds the tiny random
XTTS v2 of `ops/xtts_tiny.py` (IT SPEAKS NOISE: its GPT is 1 layer wide 64, but the HiFi-GAN
decoder and the streaming loop are the release's, so the timings of the code path are real).
A random GPT never stops by itself, so every sentence runs to `--xtts-tokens` audio tokens
(~46 ms of speech each); the cadence columns show what each later chunk costs, because
`inference_stream` re-decodes all the audio so far for every chunk. Stall = how long
playback, started at the first chunk, would wait for the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from schemas import (
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    SentenceDone,
    TtsAudioChunk,
    TtsStarted,
    decode,
    new_id,
    subject_filter,
)
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import NatsServer, free_port
from workers.runtime.procs import WorkerProcess
from workers.runtime.streams import ensure_streams
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings

SENTENCES = [
    "Hello!",
    "Sure, I can help with that.",
    "The meeting has been moved to Thursday at three in the afternoon.",
    "If you leave now, taking the ring road, you should arrive before the rain starts.",
    "Here is a quick summary: the report is finished, the budget is approved, and the "
    "launch date stays the same.",
    "Thanks for asking.",
    "It looks like the weather will be sunny tomorrow, with a light breeze from the west.",
    "Would you like me to read the next item on your list, or shall we stop here for today?",
]


def direct(piper: PiperBackend, text: str) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    samples = 0
    for pcm in piper.synthesize(text):
        if first is None:
            first = time.perf_counter() - t0
        samples += len(pcm)
    total = time.perf_counter() - t0
    audio_s = samples / piper.sample_rate
    return {
        "first_audio_ms": 1000 * (first or total),
        "rtf": total / audio_s,
        "audio_ms": 1000 * audio_s,
    }


async def through_bus(bus: Bus, text: str) -> dict[str, float]:
    """One sentence as a one-sentence reply: claimed by the worker first (as while the llm
    still generates), then timed from the sentence's publication to its first audio."""
    conv, utt = new_id()[:16], new_id()
    common = {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}
    loop = asyncio.get_running_loop()
    claimed: asyncio.Future[None] = loop.create_future()
    first: asyncio.Future[float] = loop.create_future()
    done: asyncio.Future[tuple[float, float]] = loop.create_future()

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        ev = decode(msg.data)
        if isinstance(ev, TtsStarted) and not claimed.done():
            claimed.set_result(None)
        elif isinstance(ev, TtsAudioChunk) and not first.done():
            first.set_result(now)
        elif isinstance(ev, SentenceDone) and not done.done():
            done.set_result((now, ev.audio_ms))

    sub = await bus.nc.subscribe(subject_filter("device", conv), cb=on_msg)
    await bus.nc.flush()
    await bus.publish(ReplyStarted(producer="bench", **common))
    await asyncio.wait_for(claimed, 60)
    t0 = time.perf_counter()
    await bus.publish(ReplySentence(producer="bench", text=text, index=0, **common))
    await bus.publish(ReplyDone(producer="bench", text=text, sentences=1, tokens=0, **common))
    t_first = await asyncio.wait_for(first, 60)
    t_done, audio_ms = await asyncio.wait_for(done, 60)
    await sub.unsubscribe()
    return {
        "first_audio_ms": 1000 * (t_first - t0),
        "rtf": (t_done - t0) / (audio_ms / 1000),
        "audio_ms": audio_ms,
    }


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def run(rounds: int, workdir: Path) -> dict[str, object]:
    server = NatsServer(free_port(), workdir / "nats").start()
    settings = Settings(
        nats_url=server.url,
        data_dir=workdir / "data",
        _env_file=None,  # type: ignore[call-arg]
    )
    piper = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    piper.load()
    direct(piper, "Warm up.")
    results: dict[str, list[dict[str, float]]] = {"direct": [], "bus_whole": [], "bus_default": []}
    bus = await Bus.connect(settings, name="bench-tts")
    try:
        await ensure_streams(bus)
        phases = [
            ("bus_whole", {"TTS_FIRST_CLAUSE_CHARS": "0", "TTS_CLAUSE_SPLIT_CHARS": "0"}),
            ("bus_default", {}),
        ]
        for name, env in phases:
            worker = WorkerProcess(
                "tts", settings, worker_id=f"tts-{name}", env=env, log_file=workdir / f"{name}.log"
            ).start()
            try:
                await worker.wait_consumer(bus)
                await through_bus(bus, "Warm up.")
                for _ in range(rounds):
                    for text in SENTENCES:
                        if name == "bus_whole":  # direct right beside it: same machine load
                            results["direct"].append({**direct(piper, text), "text": len(text)})
                        results[name].append({**await through_bus(bus, text), "text": len(text)})
                        print(".", end="", file=sys.stderr, flush=True)
            finally:
                worker.stop()
    finally:
        await bus.close()
        server.stop()
    print(file=sys.stderr)
    summary: dict[str, object] = {}
    for name, rows in results.items():
        summary[name] = {
            "first_audio_ms_median": round(median(rows, "first_audio_ms"), 1),
            "rtf_median": round(median(rows, "rtf"), 4),
        }
    d = summary["direct"]
    for name in ("bus_whole", "bus_default"):
        s = summary[name]
        assert isinstance(s, dict) and isinstance(d, dict)
        s["first_audio_ratio_vs_direct"] = round(
            s["first_audio_ms_median"] / d["first_audio_ms_median"], 3
        )
        s["rtf_ratio_vs_direct"] = round(s["rtf_median"] / d["rtf_median"], 3)
    per_sentence = [
        {
            "chars": len(t),
            "audio_ms": round(results["direct"][i]["audio_ms"]),
            **{
                f"{k}_first_ms": round(results[k][i]["first_audio_ms"], 1)
                for k in ("direct", "bus_whole", "bus_default")
            },
        }
        for i, t in enumerate(SENTENCES)
    ]
    return {
        "sentences": len(SENTENCES),
        "rounds": rounds,
        "summary": summary,
        "per_sentence": per_sentence,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="just bench tts", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["piper", "xtts"], default="piper")
    p.add_argument("--rounds", type=int, default=2, help="passes over the sentences (default 2)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--out", help="also write the JSON report here")
    p.add_argument("--xtts-model-dir", type=Path, help="XTTS weights (default: build the tiny one)")
    p.add_argument("--xtts-tokens", type=int, default=100, help="tiny model's audio tokens")
    p.add_argument("--speaker-wav", type=Path, help="reference voice (default: Piper speech)")
    p.add_argument("--threads", type=int, default=0, help="TTS_THREADS for XTTS (0: torch's)")
    args = p.parse_args(argv)
    if args.backend == "xtts":
        from ops.bench.tts_xtts import run_xtts

        with tempfile.TemporaryDirectory(prefix="bench-tts-xtts-") as tmp:
            report = run_xtts(args, Path(tmp))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
        if args.json:
            print(json.dumps(report))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-tts-") as tmp:
        report = asyncio.run(run(args.rounds, Path(tmp)))
    summary = report["summary"]
    assert isinstance(summary, dict)
    print(f"{'':14}{'first audio ms':>16}{'RTF':>9}{'first x direct':>16}{'RTF x direct':>14}")
    for name, s in summary.items():
        first_x = s.get("first_audio_ratio_vs_direct", 1.0)
        rtf_x = s.get("rtf_ratio_vs_direct", 1.0)
        print(
            f"{name:14}{s['first_audio_ms_median']:>16.1f}{s['rtf_median']:>9.3f}"
            f"{first_x:>16.2f}{rtf_x:>14.2f}"
        )
    print("(medians over", report["sentences"], "sentences x", report["rounds"], "rounds)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
