"""`just bench load [N ...] [--max 16] [--fast]`: N conversations at once through one pipeline.

For each load level N (default 1, 4, 8; `--max 16` adds 16), N mic processes load and then
start speaking together (MIC_START_AT: a mic's start-up must not land on the others' turns),
each streaming one spoken question (synthesized with the bundled voice) into its own
conversation, in real time unless --fast; one set of workers (embedded models) serves them
all. `--rounds R` runs the levels R times and prints each level's p50 and its ratio to its
questions asked alone, as the median of the rounds and each round's (one run on a noisy
machine is one draw); `--compare VAR=VALUE[,VAR=VALUE] --rounds R` runs the levels with the
defaults and with those worker settings, alternated, and prints both the same way.
Reported per level, from the event log:
- events/s through the bus (published, by event ts) and into the log (by recorded_at);
- recorder lag (recorded_at - ts) p50/p99;
- per-stage queueing delay: time a turn waited at a stage beyond the stage's own work
  (stt: final latency - decode_ms; llm: transcript->first token - the worker's own
  first_token_ms; tts: first sentence->first audio - its first_audio_ms; speaker: first audio
  -> first played sample);
- voice-to-voice p50/p95 (real end of speech -> first reply audio played), and its ratio to
  the same questions asked alone: N=1 asks every question the highest level asks, one
  conversation at a time;
- audio chunks published (mic's voice-stopped counts; JetStream's stored count) vs recorded;
- back-pressure: each durable's max_ack_pending (the bound) and the most pending/unacked seen;
- peak RSS (VmHWM) of each worker process; CPU seconds of each worker and of all mics, and
  the load average (other processes on the machine distort every figure above).
The speaker's WAV sink runs without its real-time clock (voice-to-voice ends at the first
played sample, so this changes no latency, only how long a level takes).
The llm generates LLM_PARALLEL replies at once, decoded together in one batch (the bundled
model's default: 4; --llm-parallel K sets it); with 1, its queue is the bottleneck at N > 1.

`--cluster 3` runs the levels twice in one run, on a single embedded server and on a
loopback 3-node cluster with R3 streams (ops/bench/cluster_load.py), and kills -9 the VOICE
stream leader during each cluster level: the pause it causes is reported beside the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
import numpy as np

import schemas as s
from ops.bench.compare import alternated, parse
from ops.bench.e2e import QUESTIONS
from ops.bench.stats import pct
from ops.chaos import audit, consumer_states, quiescent
from workers.cli.pipeline import Pipeline, progress, tool_endpoint
from workers.runtime.audio import write_wav
from workers.runtime.bus import Bus
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog, row_event, timings
from workers.runtime.eventlog.verify import verify

LEVEL_TIMEOUT_S = 600.0
LISTEN_ON_MS = 60_000
"""Silence each mic hears after its question, until the level ends and stops it."""


def vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live (or not yet reaped) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu(p: Pipeline) -> dict[str, float]:
    return {
        name: cpu_s(wp.proc.pid)
        for name, wp in p.procs.items()
        if wp.proc is not None and not name.startswith("mic")
    }


def question_files(folder: Path) -> list[Path]:
    from ops.bench.stt import synth_piper

    lead = np.zeros(4800, np.int16)
    return [
        write_wav(folder / f"q{i}.wav", np.concatenate([lead, synth_piper(q)]).tobytes(), 16_000)
        for i, q in enumerate(QUESTIONS)
    ]


class Sampler:
    """Polls the consumers while a level runs: the most pending / unacked per durable."""

    def __init__(self) -> None:
        self.peak: dict[str, dict[str, int]] = {}
        self.done = asyncio.Event()

    async def run(self, p: Pipeline) -> None:
        assert p.bus is not None
        # Stopped by `done`, not cancelled: a cancel that lands inside nats.py's request is
        # not always delivered, and the poll then ran on after the pipeline closed its bus.
        while not self.done.is_set():
            for name, c in (await consumer_states(p.bus)).items():
                pk = self.peak.setdefault(name, {"pending": 0, "ack_pending": 0})
                pk["pending"] = max(pk["pending"], c.pending)
                pk["ack_pending"] = max(pk["ack_pending"], c.ack_pending)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 0.25)


async def turns_ended(log: EventLog, conversations: list[str], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = []
        for c in conversations:
            rows.extend(await asyncio.to_thread(log.turns, c))
        if len(rows) >= len(conversations) and all(
            r.playback_done_at or r.error_code for r in rows
        ):
            return rows
        await asyncio.sleep(0.25)
    raise TimeoutError(f"turns of {len(conversations)} conversations not done in {timeout:.0f} s")


def queueing(log: EventLog, turn: Any) -> dict[str, float | None]:
    ms = timings(turn).as_dict()
    evs = {
        e.type: e
        for e in log.events(
            utterance_id=turn.utterance_id,
            types=["stt.transcript", "llm.reply-done", "tts.sentence-done"],
            with_payload=False,
        )
        if not isinstance(e, s.SentenceDone) or e.sentence_index == 0
    }

    def minus(total: float | None, own: float | None) -> float | None:
        return None if total is None or own is None else max(0.0, total - own)

    tr, done, sent = (
        evs.get("stt.transcript"),
        evs.get("llm.reply-done"),
        evs.get("tts.sentence-done"),
    )
    return {
        "stt": minus(ms["stt_final"], getattr(tr, "decode_ms", None)),
        "llm": minus(ms["llm_first_token"], getattr(done, "first_token_ms", None)),
        "tts": minus(ms["tts_first_audio"], getattr(sent, "first_audio_ms", None)),
        "speaker": ms["playback_start"],
    }


async def level(
    p: Pipeline, log: EventLog, files: list[Path], n: int, fast: bool, solo: int = 1
) -> dict:
    """N conversations at once, one turn each: what they waited, what it cost, what the log
    and the stream hold afterwards. At N=1 with `solo` > 1, the first `solo` questions are
    asked one conversation at a time, one after the other: the same questions the higher
    levels ask together, alone (a level's ratio is to its own questions: one question asked
    alone would favour or handicap every ratio by how quick that question is)."""
    assert p.bus is not None
    groups = [[k] for k in range(solo)] if n == 1 and solo > 1 else [list(range(n))]
    conversations: list[str] = []
    turns: list[Any] = []
    by_question: list[tuple[int, float | None]] = []
    cpu: dict[str, float] = {}
    wall, late, load0 = 0.0, 0, os.getloadavg()[0]
    sampler = Sampler()
    sampling = asyncio.create_task(sampler.run(p))
    try:
        for group in groups:
            convs = [f"load{n}-{k}-{s.new_id()[:8]}" for k in group]
            at = time.time() + mic_lead_s(len(group))
            mics = start_turns(p, [files[k % len(files)] for k in group], convs, fast, at)
            logs_at = {m.log_file: m.log_file.stat().st_size for m in mics if m.log_file}
            await asyncio.sleep(max(0.0, at - time.time()))
            t0 = time.monotonic()
            cpu0 = workers_cpu(p)
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                got = await turns_ended(log, convs, LEVEL_TIMEOUT_S)
                await quiescent(p.bus, timeout=60)
            finally:
                for m in mics:
                    await asyncio.to_thread(m.stop)
            wall += time.monotonic() - t0
            for name, c in cpu_since(p, cpu0, children0).items():
                cpu[name] = cpu.get(name, 0.0) + c
            late += sum(late_start(f, size) for f, size in logs_at.items())
            conversations += convs
            turns += got
            of = {t.conversation_id: timings(t).voice_to_voice for t in got}
            by_question += [(k % len(files), of.get(c)) for k, c in zip(group, convs, strict=True)]
    finally:
        sampler.done.set()
        # Ended here, while the bus is open (a poll still running when the pipeline closed
        # it ended in "Task exception was never retrieved: ConnectionClosedError").
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, nats.errors.Error):
            await asyncio.wait_for(sampling, 10)
    if late:
        progress(f"  N={n}: {late} mic(s) were not loaded by the common start: raise mic_lead_s")
    rows = []
    for c in conversations:
        rows.extend(await asyncio.to_thread(log.event_rows, c, None, None, False))
    configs = {
        i.name: i.config.max_ack_pending for i in await p.bus.js.consumers_info(p.bus.stream)
    }
    return {
        "n": n,
        "mode": "fast" if fast else "real time",
        "wall_s": wall,
        "late_mics": late,
        "turns": len(turns),
        "errors": [t.error_code for t in turns if t.error_code],
        "v2v_by_question": by_question,
        **throughput(rows),
        **latencies(log, turns),
        **await chunk_counts(p.bus, rows, conversations),
        "backpressure": {
            name: {"max_ack_pending": configs.get(name), **pk}
            for name, pk in sorted(sampler.peak.items())
        },
        "peak_rss_mb": {
            name: vm_hwm_mb(wp.proc.pid)
            for name, wp in p.procs.items()
            if wp.proc is not None and not name.startswith("mic")
        },
        "cpu_s": cpu,
        "load_average": {"start": load0, "end": os.getloadavg()[0]},
        "problems": problems_of(log, conversations),
    }


def alone_p50(results: list[dict], r: dict) -> float | None:
    """Voice-to-voice p50 of the questions of level `r` when each was asked alone (the N=1
    level's solo turns), or None without one."""
    solo = next((x for x in results if x["n"] == 1), None)
    if solo is None:
        return None
    asked = {q for q, _ in r["v2v_by_question"]}
    xs = [v for q, v in solo["v2v_by_question"] if q in asked and v is not None]
    # The estimator of the levels' own p50 (nearest rank), so N=1 is 1.00x of itself.
    return pct(xs, 0.5) if xs else None


def ratio_alone(results: list[dict], r: dict) -> float | None:
    """Level `r`'s voice-to-voice p50 over its questions' p50 alone (see `alone_p50`)."""
    alone = alone_p50(results, r)
    return r["voice_to_voice_ms"]["p50"] / alone if alone else None


def start_turns(
    p: Pipeline, files: list[Path], conversations: list[str], fast: bool, at: float
) -> list[Any]:
    """N mic processes that load now and start speaking together at `at` (wall clock): a
    mic's start-up (imports, its VAD and turn models: about a CPU-second) must not land on
    the turns of the others, as it would not with mics that run all the time. They listen
    on (to silence) until stopped after the level: a mic that reached the end of its file
    and exited spent ~0.25 CPU-seconds doing it, four of them a core for 0.6 s, just as the
    llm and the tts made the first replies."""
    return [
        p.start_mic(
            "--file",
            str(files[i]),
            "--conversation",
            c,
            "--start-at",
            f"{at:.3f}",
            *(["--fast"] if fast else []),
            worker_id=f"mic-l{len(conversations)}-{i}",
            # (at full speed a long silence would be minutes of VAD work during the level)
            env={} if fast else {"MIC_TAIL_SILENCE_MS": str(LISTEN_ON_MS)},
        )
        for i, c in enumerate(conversations)
    ]


def late_start(log_file: Path, since: int) -> bool:
    """The mic logged that it was ready only after the common start."""
    with open(log_file, "rb") as f:
        f.seek(since)
        return b"MIC_START_AT" in f.read()


def mic_lead_s(n: int) -> float:
    """Time for N mics to load side by side on this machine's cores before they speak."""
    return 3.0 + 1.5 * n / max(1, os.cpu_count() or 1)


def cpu_since(p: Pipeline, cpu0: dict[str, float], children0: Any) -> dict[str, float]:
    cpu1 = workers_cpu(p)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {n: cpu1[n] - cpu0.get(n, 0.0) for n in cpu1}
    # The mics have exited and been reaped: their CPU is in RUSAGE_CHILDREN.
    cpu["mics"] = (children.ru_utime + children.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    return cpu


def throughput(rows: list[Any]) -> dict[str, Any]:
    ts = [r.ts for r in rows]
    rec = [r.recorded_at for r in rows]
    lag = [1000.0 * (r.recorded_at - r.ts) for r in rows]
    return {
        "events": len(rows),
        "bus_events_per_s": len(rows) / max(1e-9, max(ts) - min(ts)),
        "log_events_per_s": len(rows) / max(1e-9, max(rec) - min(rec)),
        "recorder_lag_ms": {"p50": pct(lag, 0.5), "p99": pct(lag, 0.99)},
    }


def latencies(log: EventLog, turns: list[Any]) -> dict[str, Any]:
    q = [queueing(log, t) for t in turns]
    v2v = [x for x in (timings(t).voice_to_voice for t in turns) if x is not None]
    return {
        "queueing_ms": {
            stage: {
                "p50": pct([x[stage] for x in q if x[stage] is not None], 0.5),
                "p95": pct([x[stage] for x in q if x[stage] is not None], 0.95),
            }
            for stage in ("stt", "llm", "tts", "speaker")
        },
        "voice_to_voice_ms": {
            "p50": pct(v2v, 0.5),
            "p95": pct(v2v, 0.95),
            "mean": statistics.fmean(v2v) if v2v else float("nan"),
        },
    }


async def chunk_counts(bus: Bus, rows: list[Any], conversations: list[str]) -> dict[str, Any]:
    """Audio chunks as announced (voice-stopped, tts.done), stored in the stream and
    recorded in the log: nothing dropped means the three agree."""
    mic_stored = 0
    for c in conversations:
        info = await bus.js.stream_info(
            bus.stream, subjects_filter=s.subject_filter("*", c, "mic.audio-chunk")
        )
        mic_stored += sum((info.state.subjects or {}).values())

    def declared(event_type: str) -> int:
        return sum(row_event(r).chunks for r in rows if r.type == event_type)  # type: ignore[attr-defined]

    return {
        "mic_chunks": {
            "declared": declared("mic.voice-stopped"),
            "stored": mic_stored,
            "recorded": sum(1 for r in rows if r.type == "mic.audio-chunk"),
        },
        "tts_chunks": {
            "declared": declared("tts.done"),
            "recorded": sum(1 for r in rows if r.type == "tts.audio-chunk"),
        },
    }


def problems_of(log: EventLog, conversations: list[str]) -> list[str]:
    problems = []
    for c in conversations:
        problems += audit(log, c).problems
    return problems + [p.line() for p in verify(log, conversations)]


async def run(
    levels: list[int],
    fast: bool,
    llm_threads: int | None = None,
    llm_parallel: int | None = None,
    settings: Settings | None = None,
    during: Callable[[Pipeline, int], Awaitable[Any]] | None = None,
) -> list[dict]:
    """The levels through one pipeline; `during(p, n)` runs beside each level (a fault) and
    its result goes into the level's figures as "during"."""
    settings = settings or get_settings()
    files = await asyncio.to_thread(question_files, settings.data_dir / "bench" / "load-inputs")
    env = {"speaker": {"SPEAKER_SINK": "wav", "SPEAKER_REALTIME": "0"}}
    llm_env = {}
    if llm_threads:
        llm_env["LLM_THREADS"] = str(llm_threads)
    if llm_parallel:
        llm_env["LLM_PARALLEL"] = str(llm_parallel)
    if llm_env:
        env["llm"] = llm_env
    results = []
    # N=1 asks each question the highest level asks, alone, one after the other.
    solo = min(max(levels), len(files))
    async with Pipeline(settings, env=env, pool=tool_endpoint("bench")) as p:
        log = EventLog(settings.db_url, migrate=False)
        for n in levels:
            if n == 1 and solo > 1:
                progress(f"load level N=1: {solo} questions, one conversation at a time ...")
            else:
                progress(f"load level N={n}: {n} conversation(s) at once ...")
            fault = asyncio.create_task(during(p, n)) if during else None
            res = await level(p, log, files, n, fast, solo)
            if fault is not None:
                res["during"] = await fault
            progress(
                f"  N={n}: {res['turns']} turns in {res['wall_s']:.1f} s, voice-to-voice p50 "
                f"{res['voice_to_voice_ms']['p50']:.0f} ms"
            )
            results.append(res)
        log.close()
    return results


def print_table(results: list[dict]) -> None:
    def row(label: str, f) -> None:  # type: ignore[no-untyped-def]
        print(f"{label:34}" + "".join(f"{f(r):>16}" for r in results))

    row("conversations at once (N)", lambda r: r["n"])
    row("turns ended / errors", lambda r: f"{r['turns']}/{len(r['errors'])}")
    row("wall time s", lambda r: f"{r['wall_s']:.1f}")
    row("events", lambda r: r["events"])
    row("events/s through the bus", lambda r: f"{r['bus_events_per_s']:.0f}")
    row("events/s into the log", lambda r: f"{r['log_events_per_s']:.0f}")
    row("recorder lag p50 ms", lambda r: f"{r['recorder_lag_ms']['p50']:.0f}")
    row("recorder lag p99 ms", lambda r: f"{r['recorder_lag_ms']['p99']:.0f}")
    for stage in ("stt", "llm", "tts", "speaker"):
        row(
            f"queueing {stage} p50/p95 ms",
            lambda r, st=stage: "{:.0f}/{:.0f}".format(
                r["queueing_ms"][st]["p50"], r["queueing_ms"][st]["p95"]
            ),
        )
    row("voice-to-voice p50 ms", lambda r: f"{r['voice_to_voice_ms']['p50']:.0f}")
    row("voice-to-voice p95 ms", lambda r: f"{r['voice_to_voice_ms']['p95']:.0f}")
    row(
        "mic chunks declared/stored/rec",
        lambda r: "{declared}/{stored}/{recorded}".format(**r["mic_chunks"]),
    )
    row("tts chunks declared/recorded", lambda r: "{declared}/{recorded}".format(**r["tts_chunks"]))
    names = sorted({k for r in results for k in r["peak_rss_mb"]})
    for name in names:
        row(f"peak RSS {name} MB", lambda r, n=name: f"{r['peak_rss_mb'].get(n) or 0:.0f}")
    for name in sorted({k for r in results for k in r["cpu_s"]}):
        row(f"CPU s {name}", lambda r, n=name: f"{r['cpu_s'].get(n, 0.0):.1f}")
    row("CPU s total / wall s (2 cores)", lambda r: f"{sum(r['cpu_s'].values()) / r['wall_s']:.2f}")
    row(
        "load average start/end",
        lambda r: "{:.1f}/{:.1f}".format(r["load_average"]["start"], r["load_average"]["end"]),
    )
    durables = sorted({k for r in results for k in r["backpressure"]})
    for d in durables:
        row(
            f"{d} max unacked (bound)",
            lambda r, d=d: "{} ({})".format(
                r["backpressure"].get(d, {}).get("ack_pending", "-"),
                r["backpressure"].get(d, {}).get("max_ack_pending", "-"),
            ),
        )

    def ratio(r: dict) -> str:
        x = ratio_alone(results, r)
        return f"{x:.2f}x" if x else "-"

    row("v2v p50 of its questions alone ms", lambda r: f"{alone_p50(results, r) or 0:.0f}")
    row("voice-to-voice p50 / alone", ratio)
    dropped = [
        r["n"]
        for r in results
        if len(
            {r["mic_chunks"]["declared"], r["mic_chunks"]["stored"], r["mic_chunks"]["recorded"]}
        )
        > 1
        or r["tts_chunks"]["declared"] != r["tts_chunks"]["recorded"]
    ]
    print("audio chunks dropped: " + (f"YES at N={dropped}" if dropped else "none"))
    for r in results:
        for prob in r["problems"]:
            print(f"problem at N={r['n']}: {prob}")


def p50s(rounds: list[list[dict]], k: int) -> list[float]:
    """Level k's voice-to-voice p50 in each round."""
    return [r[k]["voice_to_voice_ms"]["p50"] for r in rounds]


def ratios(rounds: list[list[dict]], k: int) -> list[float]:
    """Level k's ratio to its questions asked alone, each round against its own N=1 (the
    machine's drift cancels)."""
    return [x for r in rounds if (x := ratio_alone(r, r[k]))]


def listed(xs: list[float]) -> str:
    return ", ".join(f"{x:.0f}" for x in xs)


def ratio_rounds(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):.2f} (" + ", ".join(f"{x:.2f}" for x in xs) + ")"


def repeated(args: argparse.Namespace, levels: list[int]) -> list[list[dict]]:
    """The levels `--rounds` times; each round's figures, then their medians and spread."""
    rounds = []
    for i in range(args.rounds):
        if args.rounds > 1:
            progress(f"round {i + 1}/{args.rounds}")
        rounds.append(asyncio.run(run(levels, args.fast, args.llm_threads, args.llm_parallel)))
    if args.rounds == 1:
        return rounds
    print(f"voice-to-voice p50 ms over {args.rounds} rounds: median (each round)")
    for k, n in enumerate(levels):
        xs = p50s(rounds, k)
        print(f"  N={n}: {statistics.median(xs):.0f} ({listed(xs)})")
        if n > 1:
            rs = ratios(rounds, k)
            within = sum(x <= 2.0 for x in rs)
            print(
                f"  N={n} / its questions alone, same round: {ratio_rounds(rs)}; "
                f"within 2x in {within} of {len(rs)}"
            )
    return rounds


def compare_setting(args: argparse.Namespace, levels: list[int]) -> int:
    """The levels with the defaults and with some worker settings, alternated (see
    ops/bench/compare.py)."""
    try:
        parse(args.compare)
    except ValueError as exc:
        print(f"bench load: error: {exc}", file=sys.stderr)
        return 2
    runs = alternated(
        args.compare,
        args.rounds,
        lambda: asyncio.run(run(levels, args.fast, args.llm_threads, args.llm_parallel)),
    )
    med = statistics.median
    print(f"voice-to-voice p50 ms, median of rounds: defaults | {args.compare}")
    for k, n in enumerate(levels):
        a, b = p50s(runs[False], k), p50s(runs[True], k)
        print(f"  N={n}: {med(a):.0f} | {med(b):.0f}   (rounds {listed(a)} | {listed(b)})")
        if n > 1:
            ra, rb = ratios(runs[False], k), ratios(runs[True], k)
            print(
                f"  N={n} / its questions alone, same run: {ratio_rounds(ra)} | {ratio_rounds(rb)}"
            )
    for variant in (False, True):
        label = args.compare if variant else "defaults"
        print(f"-- last round, {label}")
        print_table(runs[variant][-1])
    if args.json:
        print(json.dumps({"defaults": runs[False], args.compare: runs[True]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just bench load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("levels", nargs="*", type=int, help="conversations at once (default 1 4 8)")
    ap.add_argument("--max", type=int, default=8, help="add 16 (and beyond) when >= 16")
    ap.add_argument("--fast", action="store_true", help="mics stream as fast as possible")
    ap.add_argument("--llm-threads", type=int, help="LLM_THREADS for the llm worker")
    ap.add_argument(
        "--llm-parallel", type=int, help="LLM_PARALLEL: replies the llm decodes together"
    )
    ap.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="3",
        help="also run on a loopback cluster of this many nodes (R3 streams), leader killed",
    )
    ap.add_argument(
        "--compare",
        metavar="VAR=VALUE[,VAR=VALUE]",
        help="run the levels with the defaults and with these worker settings, alternated "
        "round by round, and print both (e.g. LLM_FIRST_SENTENCES_FIRST=false)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        help="run the levels this many times and print each level's median and spread "
        "(default 1; with --compare, 2: rounds alternate the sides)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    levels = args.levels or [n for n in (1, 4, 8, 16, 32) if n <= max(8, args.max)]
    if any(n < 1 for n in levels):
        print("bench load: error: N must be >= 1", file=sys.stderr)
        return 2
    mode = "fast (as fast as possible)" if args.fast else "real time"
    progress(f"running N in {levels}, mics in {mode}, embedded models, one worker each")
    t0 = time.monotonic()
    if args.cluster:
        from ops.bench.cluster_load import main_cluster

        return main_cluster(args, levels)
    if args.compare:
        args.rounds = args.rounds or 2
        return compare_setting(args, levels)
    args.rounds = args.rounds or 1
    try:
        rounds = repeated(args, levels)
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench load: error: {exc}", file=sys.stderr)
        return 1
    print(f"ran N in {levels}, mics in {mode}, in {time.monotonic() - t0:.0f} s")
    if args.rounds > 1:
        print("-- last round")
    print_table(rounds[-1])
    if args.json:
        print(json.dumps(rounds[-1] if args.rounds == 1 else rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
