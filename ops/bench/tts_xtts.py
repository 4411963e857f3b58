"""`just bench tts --backend xtts`: XTTS v2 (the tiny random model by default) against Piper.

Both backends run in this process through the adapters the tts worker uses
(`XttsBackend.synthesize`, `PiperBackend.synthesize`), alternated sentence by sentence, the
order flipped every round, so both see the same machine load. Per sentence: time to the
first audio, real-time factor, and the stall a listener would hear (playback starting at the
first chunk and waiting whenever the next chunk is late). For XTTS also the cadence: the
interval before each streamed chunk, by its position in the sentence.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.stats import pct
from workers.runtime.config import Settings
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings

SENTENCES = [
    "Hello!",
    "Sure, I can help with that.",
    "The meeting has been moved to Thursday at three in the afternoon.",
    "If you leave now, taking the ring road, you should arrive before the rain starts.",
    "Here is a quick summary: the report is finished, the budget is approved, and the "
    "launch date stays the same.",
]


def timed(pieces: Any, rate: int) -> dict[str, Any]:
    """Consume a backend's stream; when each piece arrived and how much audio it held."""
    t0 = time.perf_counter()
    arrivals: list[float] = []
    durations: list[float] = []
    for pcm in pieces:
        arrivals.append(time.perf_counter() - t0)
        durations.append(len(pcm) / rate)
    total = time.perf_counter() - t0
    audio = sum(durations)
    # Playback starts with the first piece; each next piece must be there when the audio
    # before it has played, or the listener hears a gap.
    play_at, stall = arrivals[0] if arrivals else total, 0.0
    for arrived, dur in zip(arrivals, durations, strict=True):
        if arrived > play_at:
            stall += arrived - play_at
            play_at = arrived
        play_at += dur
    intervals = [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "first_ms": 1000 * (arrivals[0] if arrivals else total),
        "total_ms": 1000 * total,
        "audio_ms": 1000 * audio,
        "rtf": total / audio if audio else float("nan"),
        "stall_ms": 1000 * stall,
        "chunks": len(arrivals),
        "intervals_ms": [1000 * x for x in intervals],
    }


def reference_wav(piper: PiperBackend, folder: Path) -> Path:
    """Eight seconds of Piper speech as the voice to clone (any real speech will do)."""
    import soundfile as sf

    text = (
        "My voice is the one you should clone. I speak clearly and calmly, every single day, "
        "about the weather, the trains and the news."
    )
    speech = np.concatenate(list(piper.synthesize(text)))
    path = folder / "reference.wav"
    sf.write(path, speech, piper.sample_rate, subtype="PCM_16")
    return path


def spread(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "p90": round(pct(values, 0.9), 1),
    }


def run_xtts(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from workers.tts.xtts import XttsBackend

    piper = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    piper.load()
    model_dir = args.xtts_model_dir
    tiny = model_dir is None
    if tiny:
        from ops.xtts_tiny import build

        print(
            f"bench tts: building the tiny random XTTS v2 ({args.xtts_tokens} audio tokens "
            "per sentence; it speaks noise)",
            file=sys.stderr,
        )
        model_dir = build(work / "xtts-tiny", max_audio_tokens=args.xtts_tokens)
    cfg = TtsSettings(  # type: ignore[call-arg]
        _env_file=None,
        backend="xtts",
        device="cpu",
        xtts_model_dir=model_dir,
        speaker_wav=args.speaker_wav or reference_wav(piper, work),
        threads=args.threads,
    )
    xtts = XttsBackend(cfg, Settings(data_dir=work / "data", _env_file=None))  # type: ignore[call-arg]
    xtts.load()
    load = {"load_s": round(xtts.load_s, 2), "latents_s": round(xtts.latents_s, 2)}
    print(f"bench tts: xtts loaded in {load['load_s']} s, latents {load['latents_s']} s")
    # One-off costs (oneDNN kernels, espeak) before anything is timed.
    list(piper.synthesize("Warm up."))
    list(xtts.synthesize("Warm up."))
    rows: dict[str, list[dict[str, Any]]] = {"piper": [], "xtts": []}
    backends = {"piper": piper, "xtts": xtts}
    for r in range(args.rounds):
        for i, text in enumerate(SENTENCES):
            order = ["piper", "xtts"] if (r + i) % 2 == 0 else ["xtts", "piper"]
            for name in order:
                b = backends[name]
                row = timed(b.synthesize(text), b.sample_rate)
                rows[name].append({**row, "sentence": i, "chars": len(text)})
                print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    summary: dict[str, Any] = {}
    for name, rs in rows.items():
        summary[name] = {
            "first_ms": spread([x["first_ms"] for x in rs]),
            "rtf": spread([x["rtf"] for x in rs]),
            "stall_ms": spread([x["stall_ms"] for x in rs]),
        }
    ratios = {
        key: round(summary["xtts"][key]["p50"] / max(summary["piper"][key]["p50"], 1e-9), 2)
        for key in ("first_ms", "rtf")
    }
    cadence: dict[int, list[float]] = {}
    for x in rows["xtts"]:
        for k, ms in enumerate(x["intervals_ms"], start=1):
            cadence.setdefault(k, []).append(ms)
    per_sentence = []
    for i, text in enumerate(SENTENCES):
        p = [x for x in rows["piper"] if x["sentence"] == i]
        x = [x for x in rows["xtts"] if x["sentence"] == i]
        per_sentence.append(
            {
                "chars": len(text),
                "piper_first_ms": round(statistics.median(r["first_ms"] for r in p), 1),
                "piper_total_ms": round(statistics.median(r["total_ms"] for r in p), 1),
                "piper_audio_ms": round(statistics.median(r["audio_ms"] for r in p)),
                "xtts_first_ms": round(statistics.median(r["first_ms"] for r in x), 1),
                "xtts_total_ms": round(statistics.median(r["total_ms"] for r in x), 1),
                "xtts_audio_ms": round(statistics.median(r["audio_ms"] for r in x)),
                "xtts_chunks": x[0]["chunks"],
            }
        )
    report = {
        "model": "tiny random XTTS v2 (noise)" if tiny else str(model_dir),
        "xtts_tokens": args.xtts_tokens if tiny else None,
        "stream_chunk_tokens": cfg.xtts_stream_chunk_size,
        "threads": args.threads,
        "rounds": args.rounds,
        **load,
        "summary": summary,
        "xtts_over_piper": ratios,
        "cadence_ms_by_chunk": {k: spread(v) for k, v in sorted(cadence.items())},
        "per_sentence": per_sentence,
    }
    print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    s = report["summary"]
    head = f"{'':8}{'first audio ms p50 [min-max]':>30}{'RTF p50 [min-max]':>24}"
    print(f"{head}{'stall ms p50':>14}")
    for name in ("piper", "xtts"):
        f, r, st = s[name]["first_ms"], s[name]["rtf"], s[name]["stall_ms"]
        print(
            f"{name:8}{f['p50']:>12.1f} [{f['min']:.0f}-{f['max']:.0f}]".ljust(38)
            + f"{r['p50']:>8.2f} [{r['min']:.2f}-{r['max']:.2f}]".ljust(24)
            + f"{st['p50']:>12.1f}"
        )
    ratio = report["xtts_over_piper"]
    print(f"xtts / piper: first audio x{ratio['first_ms']}, RTF x{ratio['rtf']}")
    print(f"xtts cadence (interval before chunk k, {report['stream_chunk_tokens']} tokens each):")
    for k, c in report["cadence_ms_by_chunk"].items():
        print(f"  chunk {k:>2}: {c['p50']:>8.1f} ms [{c['min']:.0f}-{c['max']:.0f}]")
    print(f"{'chars':>6}{'piper first':>13}{'piper total':>13}{'xtts first':>12}{'xtts total':>12}")
    for row in report["per_sentence"]:
        print(
            f"{row['chars']:>6}{row['piper_first_ms']:>13.1f}{row['piper_total_ms']:>13.1f}"
            f"{row['xtts_first_ms']:>12.1f}{row['xtts_total_ms']:>12.1f}"
        )
    print(
        f"(medians over {len(report['per_sentence'])} sentences x {report['rounds']} rounds; "
        f"model: {report['model']})"
    )
