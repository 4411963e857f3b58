"""`just bench e2e`: voice-to-voice latency of whole spoken turns, and what it is made of.

For each spoken question (synthesized with the bundled voice), in one run, interleaved:
1. the streaming pipeline: every worker as its own process over NATS, as `just demo` runs
   them (mic file source in real time); per-stage timings come from the event log;
2. the isolated model latencies the pipeline cannot avoid, measured in this process on the
   same models and inputs: final Whisper decode of the utterance the stt worker saw, LLM time
   to the first speakable sentence, Piper time to the first audio of that sentence;
3. a sequential baseline on the same models: transcribe the whole utterance, then generate
   the whole reply, then synthesize it all.
Printed: per-stage p50/p95, voice-to-voice p50/p95 (turn 1 apart: it shows whether the
models were warm), the end-of-turn wait, speculation (answers started during the wait,
committed, discarded, and the work thrown away), and two ratios: sequential / streaming (what
streaming buys) and streaming / isolated sum (what bus, log and tracing cost; target
<= 1.15). Voice-to-voice runs from the real end of the user's speech (the last voiced
audio, before the end-pointer's wait) to the first reply sample played, as people feel it;
"from the endpoint" leaves the wait out and is labelled so. `--pause-turns N` then speaks N
sentences with a 650 ms pause inside ("Set a timer for ... ten minutes.") through the same
pipeline, once with MIC_TURN=vad and once with MIC_TURN=smart (alternated), and counts the
premature turns (a sentence cut in two). `--compare-speculation` runs the
pipeline with and without speculation (STT_SPECULATE), alternated, and prints both;
`--compare VAR=VALUE` does the same for any worker setting (e.g.
MIC_TURN_TRANSCRIPT_WAIT_MS=0): the defaults against VAR=VALUE, alternated round by round.
A Markdown table and a PNG chart go to DATA_DIR/bench/. Replies are greedy
(LLM_TEMPERATURE=0 unless set) so two runs speak the same sentences and can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import schemas as s
from ops.bench.compare import alternated, parse
from ops.bench.llm import direct_turn
from ops.bench.stats import pct
from ops.bench.stt import synth_piper
from ops.bench.tts import direct as piper_direct
from workers.cli.demo import LiveView, wait_recorded
from workers.cli.pipeline import Pipeline, progress, tool_endpoint
from workers.llm.backends import Generation, make_backend
from workers.llm.config import LlmSettings
from workers.llm.worker import turn_seed
from workers.runtime.audio import write_wav
from workers.runtime.config import get_settings
from workers.runtime.eventlog import EventLog, timings
from workers.stt.backends import WhisperBackend
from workers.stt.config import SttSettings
from workers.tts.backends import PiperBackend, split_clauses
from workers.tts.config import TtsSettings

QUESTIONS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Give me a tip for sleeping better.",
    "What should I cook for dinner tonight?",
    "Tell me something interesting about octopuses.",
    "How far away is the moon?",
    "What is a good name for a cat?",
]
STAGES = ["endpoint_wait", "stt_final", "llm_first_sentence", "tts_first_audio", "playback_start"]
#: The figures of a turn kept per row (stages, then what the user waited).
FIGURES = [*STAGES, "voice_to_voice", "voice_to_voice_from_endpoint"]


class Models:
    """The same models the workers load, in this process, for the isolated measurements."""

    def __init__(self) -> None:
        self.stt = WhisperBackend(SttSettings())
        self.llm_settings = LlmSettings()
        # Built exactly as the llm worker builds it (same threads, context, sampling).
        self.llm = make_backend(self.llm_settings)
        self.tts = PiperBackend(TtsSettings())

    async def load(self) -> None:
        self.stt.load()
        self.tts.load()
        await self.llm.start()
        system = self.llm_settings.system_prompt
        await self.llm.warmup(
            [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
        )

    def decode_ms(self, audio: np.ndarray) -> tuple[float, str]:
        t0 = time.perf_counter()
        text = self.stt.transcribe(audio, final=True, language=None).text
        return 1000 * (time.perf_counter() - t0), text

    async def reply(self, question: str, utterance_id: str) -> tuple[dict, float, str]:
        """LLM first sentence (isolated) and whole reply time (sequential baseline)."""
        first = await direct_turn(self.llm, self.llm_settings.system_prompt, question, utterance_id)
        messages = [
            {"role": "system", "content": self.llm_settings.system_prompt},
            {"role": "user", "content": question},
        ]
        t0 = time.perf_counter()
        parts = [
            p
            async for p in self.llm.stream(
                messages, seed=turn_seed(utterance_id), cancel=threading.Event(), gen=Generation()
            )
        ]
        return first, 1000 * (time.perf_counter() - t0), "".join(parts)

    def synth_all_ms(self, text: str) -> float:
        t0 = time.perf_counter()
        for _ in self.tts.synthesize(text):
            pass
        return 1000 * (time.perf_counter() - t0)


def utterance_audio(log: EventLog, utterance_id: str) -> np.ndarray:
    chunks = log.events(utterance_id=utterance_id, types=["mic.audio-chunk"])
    pcm = b"".join(c.audio for c in sorted(chunks, key=lambda c: c.seq))  # type: ignore[attr-defined]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def first_sentence(log: EventLog, utterance_id: str) -> str:
    ev = log.events(utterance_id=utterance_id, types=["llm.reply-sentence"])
    ev = [e for e in ev if isinstance(e, s.ReplySentence)]
    return min(ev, key=lambda e: e.index).text if ev else ""


def transport_ms(log: EventLog, utterance_id: str) -> float | None:
    """Time the critical path spent between workers rather than in them, from the log.

    Each hop = (output event ts - input event ts) - the worker's own measured work: the llm
    reports first_token_ms from the transcript's arrival, the tts first_audio_ms from the
    sentence's arrival; the speaker's whole stage (first chunk -> playback-started) counts as
    transport. What remains is publish, JetStream, fetch, decode, logging and tracing.
    """
    ev = log.events(utterance_id=utterance_id, with_payload=False)
    get = lambda cls: [e for e in ev if isinstance(e, cls)]  # noqa: E731
    tr, tok, done = get(s.Transcript), get(s.ReplyToken), get(s.ReplyDone)
    sent, chunk, sdone = get(s.ReplySentence), get(s.TtsAudioChunk), get(s.SentenceDone)
    started = get(s.PlaybackStarted)
    if not (tr and tok and done and sent and chunk and sdone and started):
        return None
    sent0 = min(sent, key=lambda e: e.index)
    sd0 = min(sdone, key=lambda e: e.sentence_index)
    chunk0 = min(chunk, key=lambda e: e.seq)
    llm_hop = (min(t.ts for t in tok) - tr[0].ts) * 1000 - done[0].first_token_ms
    tts_hop = (chunk0.ts - sent0.ts) * 1000 - sd0.first_audio_ms
    speaker_hop = (started[0].ts - chunk0.ts) * 1000
    return max(0.0, llm_hop) + max(0.0, tts_hop) + speaker_hop


def speculation_of(log: EventLog, utterance_id: str) -> dict[str, Any]:
    """What speculation did in a turn: answers started during the wait, whether one was
    the answer, and the work thrown away with the discarded ones."""
    ev = log.events(utterance_id=utterance_id, with_payload=False)
    discarded = {e.generation for e in ev if isinstance(e, s.ReplyDiscarded)}
    started = [e for e in ev if isinstance(e, s.ReplyStarted) and e.speculative]
    thrown_tokens = sum(1 for e in ev if isinstance(e, s.ReplyToken) and e.generation in discarded)
    thrown_audio = sum(
        e.audio_ms for e in ev if isinstance(e, s.SentenceDone) and e.generation in discarded
    )
    return {
        "speculations": len(started),
        "committed": any(isinstance(e, s.ReplyCommitted) for e in ev),
        "discarded": len(discarded),
        "discarded_tokens": thrown_tokens,
        "discarded_audio_ms": thrown_audio,
    }


async def run(args: argparse.Namespace, speculate: bool | None = None) -> dict[str, Any]:
    settings = get_settings()
    work = settings.data_dir / "bench" / "e2e-inputs"
    questions = (QUESTIONS * ((args.turns // len(QUESTIONS)) + 1))[: args.turns]
    files = []
    for i, q in enumerate(questions):
        lead = np.zeros(4800, np.int16)
        files.append(
            write_wav(work / f"q{i}.wav", np.concatenate([lead, synth_piper(q)]).tobytes(), 16_000)
        )
    progress("loading the models in this process (isolated + sequential measurements)")
    models = Models()
    await models.load()
    rows: list[dict[str, Any]] = []
    env = {"speaker": {"SPEAKER_SINK": "wav", "SPEAKER_REALTIME": "0"}}
    if speculate is not None:
        env["stt"] = {"STT_SPECULATE": "1" if speculate else "0"}
    async with Pipeline(settings, env=env, pool=tool_endpoint("bench")) as p:
        log = EventLog(settings.db_url, migrate=False)
        for i, f in enumerate(files):
            conv = f"bench-{s.new_id()[:10]}"
            view = LiveView(io.StringIO())  # quiet: only the timings matter here
            sub = await p.watch(conv, view.on_event)
            mic = p.start_mic("--file", str(f), "--conversation", conv, worker_id=f"mic-b{i}")
            turns = await view.wait_turns_done(set(), 180)
            await asyncio.to_thread(mic.stop)
            await sub.unsubscribe()
            await wait_recorded(log, [t.utterance_id for t in turns])
            row = log.turn(turns[0].utterance_id)
            ms = timings(row).as_dict()
            # Isolated, on what the pipeline actually saw and said.
            audio = utterance_audio(log, row.utterance_id)
            decode_ms, _ = models.decode_ms(audio)
            llm_first, llm_total_ms, reply = await models.reply(row.transcript, row.utterance_id)
            sentence = first_sentence(log, row.utterance_id) or reply or "Okay."
            # The worker's first audio is that of the sentence's first clause.
            clause = split_clauses(sentence, models.tts.tts.first_clause_chars)[0]
            tts_first = piper_direct(models.tts, clause)["first_audio_ms"]
            isolated = decode_ms + llm_first["first_sentence_ms"] + tts_first
            sequential = decode_ms + llm_total_ms + models.synth_all_ms(reply or sentence)
            rows.append(
                {
                    "question": questions[i],
                    "transcript": row.transcript,
                    "reply": row.reply_text,
                    **{k: ms[k] for k in FIGURES},
                    **speculation_of(log, row.utterance_id),
                    "isolated_decode_ms": decode_ms,
                    "isolated_first_sentence_ms": llm_first["first_sentence_ms"],
                    "isolated_first_audio_ms": tts_first,
                    "isolated_sum_ms": isolated,
                    "sequential_ms": sequential,
                    "transport_ms": transport_ms(log, row.utterance_id),
                }
            )
            progress(
                f"turn {i + 1}/{len(files)}: voice-to-voice {ms['voice_to_voice']:.0f} ms, "
                f"isolated sum {isolated:.0f} ms, sequential {sequential:.0f} ms"
            )
        pauses = await run_pauses(p, log, getattr(args, "pause_turns", 0), work)
        log.close()
    await models.llm.aclose()
    res = summarize(rows)
    res["pauses"] = pauses
    return res


async def run_pauses(p: Pipeline, log: EventLog, n: int, work: Path) -> dict[str, Any]:
    """Sentences with a mid-sentence pause, each spoken once per end-of-turn policy
    (alternated): how many were cut into more than one turn, and how many answers each got."""
    from ops.bench.stt import BENCH_VOICES
    from ops.bench.turn import PAUSED, paused_clip

    out: dict[str, Any] = {
        pol: {"sentences": 0, "premature": 0, "resumed": 0, "answers": 0, "waits_ms": []}
        for pol in ("vad", "smart")
    }
    for i in range(n):
        first, rest = PAUSED[i % len(PAUSED)]
        voice = BENCH_VOICES[i % len(BENCH_VOICES)]
        f = write_wav(work / f"pause{i}.wav", paused_clip(first, rest, voice).tobytes(), 16_000)
        for pol in ("vad", "smart") if i % 2 == 0 else ("smart", "vad"):
            conv = f"bench-{s.new_id()[:10]}"
            view = LiveView(io.StringIO())
            sub = await p.watch(conv, view.on_event)
            mic = p.start_mic(
                "--file", str(f), "--conversation", conv, "--turn", pol, worker_id=f"mic-p{i}"
            )
            # The mic ends with its file: every turn of the sentence has been cut by then.
            if mic.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(mic.proc.wait, 60)
            turns = await view.wait_turns_done(set(), 120)
            await asyncio.to_thread(mic.stop)
            await sub.unsubscribe()
            await wait_recorded(log, [t.utterance_id for t in turns])
            rows = [log.turn(t.utterance_id) for t in turns]
            o = out[pol]
            o["sentences"] += 1
            o["premature"] += len(turns) > 1
            o["resumed"] += bool(view.resumed)  # cut at the pause, then resumed: one turn
            o["answers"] += sum(1 for r in rows if r is not None and r.reply_text)
            o["waits_ms"] += [
                timings(r).as_dict()["endpoint_wait"] for r in rows[-1:] if r is not None
            ]
            progress(
                f"pause {i + 1}/{n} ({pol}): {len(turns)} turn(s) for {first!r} ... {rest!r}: "
                + " | ".join(repr(r.transcript) for r in rows if r is not None)
            )
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    col = {
        k: [r[k] for r in rows if r[k] is not None]
        for k in rows[0]
        if (k.endswith("ms") and not k.startswith("discarded")) or k in FIGURES
    }
    stats = {k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in col.items()}
    v2v = statistics.median(col["voice_to_voice"])
    later = [r["voice_to_voice"] for r in rows[1:] if r["voice_to_voice"] is not None]
    return {
        "turns": rows,
        "stats": stats,
        "first_turn_ms": rows[0]["voice_to_voice"],
        "later_turns_p50_ms": statistics.median(later) if later else float("nan"),
        "speculation": {
            "turns_with": sum(1 for r in rows if r["speculations"]),
            "committed": sum(1 for r in rows if r["committed"]),
            "discarded": sum(r["discarded"] for r in rows),
            "discarded_tokens": sum(r["discarded_tokens"] for r in rows),
            "discarded_audio_ms": sum(r["discarded_audio_ms"] for r in rows),
        },
        "ratios": {
            "sequential_over_streaming": statistics.median(col["sequential_ms"]) / v2v,
            "streaming_over_isolated_sum": v2v / statistics.median(col["isolated_sum_ms"]),
            "transport_share_of_voice_to_voice": statistics.median(
                [r["transport_ms"] / r["voice_to_voice"] for r in rows if r["transport_ms"]]
            )
            if any(r["transport_ms"] for r in rows)
            else float("nan"),
            "streaming_over_isolated_sum_per_turn_p50": statistics.median(
                [r["voice_to_voice"] / r["isolated_sum_ms"] for r in rows]
            ),
        },
    }


def report(res: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md, png = out_dir / f"e2e-{stamp}.md", out_dir / f"e2e-{stamp}.png"
    st, ra = res["stats"], res["ratios"]
    lines = [
        "# End-to-end latency (embedded models)",
        "",
        "| stage | p50 ms | p95 ms |",
        "|---|---|---|",
        *[
            f"| {k} | {st[k]['p50']:.0f} | {st[k]['p95']:.0f} |"
            for k in [*FIGURES, "isolated_sum_ms", "sequential_ms", "transport_ms"]
        ],
        "",
        "- sequential / streaming (what streaming buys): "
        f"**{ra['sequential_over_streaming']:.2f}x**",
        f"- streaming / isolated model sum (bus + log + tracing cost; target <= 1.15): "
        f"**{ra['streaming_over_isolated_sum']:.2f}x**",
        "- bus + log + tracing on the critical path (transport_ms): "
        f"**{100 * ra['transport_share_of_voice_to_voice']:.1f}%** of voice-to-voice",
        "",
        "Per turn, each stage in the pipeline / the same model alone on the same input:",
        "",
        "| # | transcript | stt final | llm first sentence | tts first audio | "
        "voice-to-voice / isolated sum | sequential |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {i + 1} | {r['transcript'].strip()} | "
            f"{r['stt_final']:.0f} / {r['isolated_decode_ms']:.0f} | "
            f"{r['llm_first_sentence']:.0f} / {r['isolated_first_sentence_ms']:.0f} | "
            f"{r['tts_first_audio']:.0f} / {r['isolated_first_audio_ms']:.0f} | "
            f"{r['voice_to_voice']:.0f} / {r['isolated_sum_ms']:.0f} | "
            f"{r['sequential_ms']:.0f} |"
            for i, r in enumerate(res["turns"])
        ],
    ]
    md.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(len(res["turns"]))
    # Two parts of what the user waited: the end-pointer's decision, then the answer (whose
    # stages overlap the wait when the answer was started speculatively).
    wait = np.array([r["endpoint_wait"] or 0.0 for r in res["turns"]])
    after = np.array([r["voice_to_voice_from_endpoint"] or 0.0 for r in res["turns"]])
    ax.bar(x, wait, label="end-of-turn wait")
    ax.bar(x, after, bottom=wait, label="decision to first audio")
    ax.scatter(
        x,
        [r["isolated_sum_ms"] for r in res["turns"]],
        color="black",
        marker="_",
        s=400,
        label="isolated model sum",
        zorder=3,
    )
    ax.scatter(
        x,
        [r["sequential_ms"] for r in res["turns"]],
        color="red",
        marker="x",
        label="sequential baseline",
        zorder=3,
    )
    ax.set_xticks(x, [f"turn {i + 1}" for i in x])
    ax.set_ylabel("ms after the real end of speech")
    ax.set_title("Voice-to-voice latency by stage (streaming pipeline)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return md, png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just bench e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--compare-speculation",
        action="store_true",
        help="alternate runs with and without STT_SPECULATE and print both",
    )
    ap.add_argument(
        "--compare",
        metavar="VAR=VALUE[,VAR=VALUE]",
        help="alternate runs with the defaults and with these worker settings; print both",
    )
    ap.add_argument("--rounds", type=int, default=2, help="with --compare(-speculation)")
    ap.add_argument(
        "--pause-turns",
        type=int,
        default=6,
        help="sentences with a mid-sentence pause, each through MIC_TURN=vad and smart (0: none)",
    )
    args = ap.parse_args(argv)
    # Sampled replies differ run to run, and the first sentence's length moves every stage
    # after it; the workers inherit this environment.
    os.environ.setdefault("LLM_TEMPERATURE", "0")
    if args.compare_speculation:
        return compare_speculation(args)
    if args.compare:
        return compare_setting(args)
    res = asyncio.run(run(args))
    st, ra = res["stats"], res["ratios"]
    print(f"{'stage (ms)':28}{'p50':>8}{'p95':>8}")
    for k in [*FIGURES, "isolated_sum_ms", "sequential_ms", "transport_ms"]:
        print(f"{k:32}{st[k]['p50']:>8.0f}{st[k]['p95']:>8.0f}")
    print(
        f"turn 1 voice-to-voice {res['first_turn_ms']:.0f} ms, later turns p50 "
        f"{res['later_turns_p50_ms']:.0f} ms (warm start: turn 1 as fast as the rest)"
    )
    sp = res["speculation"]
    print(
        f"speculation: {sp['turns_with']} of {len(res['turns'])} turns answered during the "
        f"wait, {sp['committed']} committed, {sp['discarded']} answers discarded "
        f"({sp['discarded_tokens']} tokens, {sp['discarded_audio_ms']:.0f} ms of audio "
        "synthesized for nothing)"
    )
    print(
        "sequential / streaming (what streaming buys):        "
        f"{ra['sequential_over_streaming']:.2f}x"
    )
    print(
        f"streaming / isolated model sum (bus+log+tracing):    "
        f"{ra['streaming_over_isolated_sum']:.2f}x (target <= 1.15: "
        f"{'met' if ra['streaming_over_isolated_sum'] <= 1.15 else 'MISSED'})"
    )
    print(
        "bus + log + tracing on the critical path (transport_ms): "
        f"{100 * ra['transport_share_of_voice_to_voice']:.1f}% of voice-to-voice (p50 share); "
        "the rest of the gap to the isolated sum is the models sharing the CPU while they stream"
    )
    for pol, o in res["pauses"].items():
        if o["sentences"]:
            waits = [w for w in o["waits_ms"] if w is not None]
            print(
                f"pauses, MIC_TURN={pol}: {o['premature']}/{o['sentences']} sentences cut into "
                f"premature turns ({o.get('resumed', 0)} cut and resumed as one), "
                f"{o['answers']} answers; end-of-turn wait after the whole "
                f"sentence p50 {pct(waits, 0.5):.0f} ms"
            )
    md, png = report(res, get_settings().data_dir / "bench")
    print(f"report: {md}\nchart:  {png}")
    if args.json:
        print(json.dumps(res))
    return 0


def side_by_side(a: list[dict[str, Any]], b: list[dict[str, Any]], la: str, lb: str) -> None:
    """Median over rounds of each side's p50/p95, and the ratio b / a."""
    print(f"{'':34}{la:>10}{lb:>26}{lb + '/' + la:>12}")
    for key in ("voice_to_voice", "endpoint_wait", "voice_to_voice_from_endpoint"):
        for q in ("p50", "p95"):
            x = statistics.median(r["stats"][key][q] for r in a)
            y = statistics.median(r["stats"][key][q] for r in b)
            print(f"{key + ' ' + q:34}{x:>10.0f}{y:>26.0f}{y / x if x else 0:>12.2f}")


def compare_setting(args: argparse.Namespace) -> int:
    """The defaults against some worker settings, alternated, same turns and pause
    sentences."""
    try:
        parse(args.compare)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    runs = alternated(args.compare, args.rounds, lambda: asyncio.run(run(args)))
    side_by_side(runs[False], runs[True], "defaults", args.compare[:24])
    for variant in (False, True):
        rounds = ", ".join(f"{r['stats']['voice_to_voice']['p50']:.0f}" for r in runs[variant])
        pauses = [r["pauses"] for r in runs[variant]]
        cut = {
            pol: (
                sum(x[pol]["premature"] for x in pauses),
                sum(x[pol]["resumed"] for x in pauses),
                sum(x[pol]["sentences"] for x in pauses),
            )
            for pol in ("vad", "smart")
        }
        print(
            f"{args.compare if variant else 'defaults'}: voice-to-voice p50 per round {rounds} "
            "ms; pause sentences premature/resumed/spoken: "
            + ", ".join(f"{pol} {p}/{r}/{n}" for pol, (p, r, n) in cut.items())
        )
    if args.json:
        print(json.dumps({"defaults": runs[False], args.compare: runs[True]}))
    return 0


def compare_speculation(args: argparse.Namespace) -> int:
    """Speculation on and off, alternated (on, off, off, on, ...), same turns: its gain in
    voice-to-voice and its cost (the stt, llm and tts share 2 cores with thrown-away work)."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for i in range(args.rounds):
        order = (True, False) if i % 2 == 0 else (False, True)
        for speculate in order:
            progress(f"round {i + 1}: speculation {'on' if speculate else 'off'}")
            runs[speculate].append(asyncio.run(run(args, speculate=speculate)))
    side_by_side(runs[False], runs[True], "off", "on")
    spec = [r["speculation"] for r in runs[True]]
    print(
        "speculation on: committed "
        f"{sum(x['committed'] for x in spec)}, discarded {sum(x['discarded'] for x in spec)}, "
        f"thrown away {sum(x['discarded_tokens'] for x in spec)} tokens and "
        f"{sum(x['discarded_audio_ms'] for x in spec):.0f} ms of audio over "
        f"{sum(len(r['turns']) for r in runs[True])} turns; rounds: "
        + ", ".join(f"{r['stats']['voice_to_voice']['p50']:.0f}" for r in runs[True])
        + " (on) vs "
        + ", ".join(f"{r['stats']['voice_to_voice']['p50']:.0f}" for r in runs[False])
        + " (off) ms p50"
    )
    if args.json:
        print(json.dumps({"on": runs[True], "off": runs[False]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
