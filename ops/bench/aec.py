"""`just bench aec [--rounds N]`: echo cancellers side by side on the simulated room.

The reply (the bundled Piper voice, ~9 s) plays into the simulated loudspeaker room
(`workers/runtime/endpoint/room.py`) and comes back into the microphone; each canceller
(off, speex, and webrtc when the `livekit` wheel is installed) runs on the same audio, in
the mic's own `EchoPath` (20 ms blocks, the reference read by time as live).

- ERLE over time: echo power in the mic over what the canceller left, per second of reply
  (echo only: no user speech in that run);
- CPU: process time of the canceller and gate per second of audio;
- double talk: the user (espeak-ng) speaks four phrases over the reply; each phrase's stretch
  of the cancelled audio (gate off: what the STT would get) is transcribed with the bundled
  Whisper tiny, and the word error rate says how much of the user survived.

Rounds alternate the cancellers; medians are printed with the spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np

from ops.bench.stt import espeak_available, synth_espeak, synth_piper, wer
from schemas import SpeakerReference
from workers.runtime.endpoint.aec import AecError, EchoPath, make_canceller
from workers.runtime.endpoint.reference import ReferenceBuffer
from workers.runtime.endpoint.room import Room

RATE = 16_000
BLOCK = 320
REPLY = (
    "The capital of France is Paris. It is a large city on the river Seine, with many "
    "museums, parks and old bridges. Millions of people visit it every year, and in the "
    "evening the cafes along the water are full of people talking."
)
USER = [
    "Stop.",
    "Wait, I have another question.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
]
LEAD_S = 0.5


def run_room(name: str, reply: np.ndarray, near: np.ndarray, gate: bool) -> dict:
    """One pass of the room + canceller; returns mic, output and CPU per audio second."""
    buf = ReferenceBuffer()
    t0 = time.time()
    buf.write(
        SpeakerReference(
            endpoint="bench",
            conversation_id="c",
            utterance_id="u",
            audio=reply.astype("<i2").tobytes(),
            played_at=t0 + LEAD_S,
        )
    )
    room = Room(buf)
    path = EchoPath(make_canceller(name), buf, gate_on=gate and name != "off")
    mics, outs = [], []
    cpu = 0.0
    for i in range(len(near) // BLOCK):
        at = t0 + (i + 1) * BLOCK / RATE
        blk = room.mix(near[i * BLOCK : (i + 1) * BLOCK], at)
        c0 = time.process_time()
        outs.append(path.process(blk, at))
        cpu += time.process_time() - c0
        mics.append(blk)
    return {
        "mic": np.concatenate(mics),
        "out": np.concatenate(outs),
        "cpu_ms_per_s": 1000 * cpu / (len(near) / RATE),
    }


def erle_curve(mic: np.ndarray, out: np.ndarray, reply_s: float) -> list[float]:
    curve = []
    for s in range(int(reply_s)):
        a = slice(int((LEAD_S + s) * RATE), int((LEAD_S + s + 1) * RATE))
        m = float(np.mean(mic[a].astype(np.float64) ** 2))
        o = float(np.mean(out[a].astype(np.float64) ** 2))
        curve.append(round(10 * math.log10(m / max(o, 1e-3)), 1))
    return curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="just bench aec", description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not espeak_available():
        print("error: the user's speech needs espeak-ng: `apt-get install espeak-ng`")
        return 2
    names = ["off", "speex"]
    try:
        make_canceller("webrtc")
        names.append("webrtc")
    except AecError as exc:
        print(f"(webrtc skipped: {exc})")
    reply = synth_piper(REPLY)
    reply_s = len(reply) / RATE
    total = int((LEAD_S + reply_s + 1.0) * RATE) // BLOCK * BLOCK
    silent = np.zeros(total, np.int16)
    near = np.zeros(total, np.int16)
    spans = []
    for k, text in enumerate(USER):
        speech = synth_espeak(text)
        at = int((LEAD_S + 0.8 + k * (reply_s - 1.5) / len(USER)) * RATE)
        near[at : at + len(speech)] += speech[: total - at]
        spans.append((at, at + len(speech), text))

    from faster_whisper import WhisperModel

    from workers.stt.backends import resolve_model

    _, model_path = resolve_model(os.environ.get("STT_MODEL", ""))
    model = WhisperModel(str(model_path), device="cpu", compute_type="int8")

    def transcribe(a: np.ndarray) -> str:
        segs, _ = model.transcribe(
            a.astype(np.float32) / 32768, language="en", beam_size=1, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segs)

    results: dict[str, dict[str, list]] = {n: {"erle": [], "cpu": [], "wer": []} for n in names}
    clean = [transcribe(near[a - 4800 : b + 8000]) for a, b, _ in spans]
    clean_wer = wer([t for _, _, t in spans], clean)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            echo_only = run_room(name, reply, silent, gate=False)
            results[name]["erle"].append(erle_curve(echo_only["mic"], echo_only["out"], reply_s))
            results[name]["cpu"].append(echo_only["cpu_ms_per_s"])
            talk = run_room(name, reply, near, gate=False)
            hyps = [transcribe(talk["out"][a - 4800 : b + 8000]) for a, b, _ in spans]
            results[name]["wer"].append(wer([t for _, _, t in spans], hyps))
            if r == 0:
                for (_, _, text), h in zip(spans, hyps, strict=True):
                    print(f"  {name:6} {text!r:40} -> {h!r}")

    summary = {}
    print(f"\nreply {reply_s:.1f} s in the room 'loudspeaker'; {args.rounds} rounds; shared CPU")
    print(f"user phrases alone (no echo): WER {clean_wer:.2f}")
    for name in names:
        res = results[name]
        curve = [statistics.median(v) for v in zip(*res["erle"], strict=True)]
        summary[name] = {
            "erle_db_per_s": curve,
            "cpu_ms_per_audio_s": round(statistics.median(res["cpu"]), 2),
            "cpu_spread": [round(min(res["cpu"]), 2), round(max(res["cpu"]), 2)],
            "double_talk_wer": round(statistics.median(res["wer"]), 3),
        }
        print(
            f"{name:6} ERLE per second {curve}  CPU {summary[name]['cpu_ms_per_audio_s']} ms/s "
            f"({summary[name]['cpu_spread'][0]}-{summary[name]['cpu_spread'][1]})  "
            f"double-talk WER {summary[name]['double_talk_wer']:.2f}"
        )
    if args.json:
        print(json.dumps({"clean_wer": clean_wer, "cancellers": summary}))
    return 0
