"""`just bench wake`: the wake word models on spoken phrases and on other speech.

For each model shipped in `pymicro-wakeword` (okay_nabu, hey_jarvis, hey_mycroft, alexa), in
one run, through the same `WakeWord` the mic worker uses (10 ms steps, its own cutoff):
- detection rate: its phrase spoken by espeak-ng voices at several speeds (and the Piper joe
  voice), each clip after half a second of quiet room noise, a fresh detector per clip;
- false accepts per hour: the other speech of the benchmarks (32 assistant phrases and the
  e2e questions, espeak-ng en-us and en-gb and Piper, with room noise), one long stream;
- CPU: process time per second of audio on that stream.
Synthetic voices are not people: a phrase espeak-ng says oddly can be missed by a model that
hears people well. The rates are about these voices; the false-accept figure about this much
speech (its hours are printed), so 0 means "none in that many minutes", not "never".
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ops.bench.e2e import QUESTIONS
from ops.bench.stt import BENCH_PHRASES, synth_espeak, synth_piper
from workers.runtime.endpoint.vad import RATE
from workers.runtime.endpoint.wake import NAMES, WakeWord

PHRASES = {
    "okay_nabu": "okay nabu",
    "hey_jarvis": "hey jarvis",
    "hey_mycroft": "hey mycroft",
    "alexa": "alexa",
}
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
SPEEDS = (120, 150, 180)


def noisy(pcm: np.ndarray, lead_s: float = 0.5, tail_s: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [np.zeros(int(lead_s * RATE)), pcm.astype(np.float64), np.zeros(int(tail_s * RATE))]
    )
    x += rng.normal(0, 30, len(x))  # a quiet room
    return np.clip(x, -32768, 32767).astype(np.int16)


def positives(name: str) -> list[tuple[str, np.ndarray]]:
    text = PHRASES[name]
    out = []
    for voice in VOICES:
        for wpm in SPEEDS:
            try:
                out.append((f"{voice}@{wpm}", noisy(synth_espeak(text, voice=voice, wpm=wpm))))
            except Exception as exc:  # a voice variant this espeak-ng lacks
                print(f"  skipped {voice}: {exc}", file=sys.stderr)
                break
    out.append(("piper-joe", noisy(synth_piper(text))))
    return out


def other_speech() -> np.ndarray:
    parts = []
    for i, text in enumerate([*BENCH_PHRASES, *QUESTIONS]):
        parts.append(synth_espeak(text, voice=("en-us", "en-gb")[i % 2]))
        parts.append(synth_piper(text))
    gap = np.zeros(RATE // 2, dtype=np.int16)
    return noisy(np.concatenate([p for x in parts for p in (x, gap)]))


def detections(name: str, pcm: np.ndarray, block: int = RATE // 50) -> tuple[int, float]:
    wake = WakeWord(name)
    found = 0
    t0 = time.process_time()
    for i in range(0, len(pcm) - block + 1, block):
        if wake.feed(pcm[i : i + block]) is not None:
            found += 1
    return found, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just bench wake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--models", default=",".join(NAMES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    print("synthesizing other speech ...", file=sys.stderr)
    others = other_speech()
    hours = len(others) / RATE / 3600
    rows = []
    for name in names:
        print(f"{name}: spoken phrases ...", file=sys.stderr)
        clips = positives(name)
        hits = {label: detections(name, pcm)[0] > 0 for label, pcm in clips}
        false, cpu = detections(name, others)
        rows.append(
            {
                "model": name,
                "detected": sum(hits.values()),
                "phrases": len(hits),
                "missed": [k for k, v in hits.items() if not v],
                "false_accepts": false,
                "false_accepts_per_hour": false / hours,
                "cpu_ms_per_audio_s": 1000.0 * cpu / (len(others) / RATE),
            }
        )
    print(f"other speech: {len(others) / RATE / 60:.1f} min ({hours:.3f} h)")
    print(f"{'model':12}{'detected':>10}{'false/h':>10}{'CPU ms/s':>10}  missed")
    for r in rows:
        print(
            f"{r['model']:12}{r['detected']:>5}/{r['phrases']:<4}{r['false_accepts_per_hour']:>10.1f}"
            f"{r['cpu_ms_per_audio_s']:>10.2f}  {', '.join(r['missed']) or '-'}"
        )
    if args.json:
        print(json.dumps({"hours": hours, "models": rows}))
    return 0
