"""`just bench turn`: end-of-turn policies side by side on the same speech.

Two sets, synthesized by two espeak-ng voices in turn: finished sentences, and sentences
with a 650 ms pause in the middle ("Set a timer for ... ten minutes."), which are one turn.
Each setting runs the real end-pointer (Silero VAD, Smart Turn v3.2) over the same audio in
20 ms blocks:

- vad: a fixed 400 ms hangover (MIC_TURN=vad);
- smart-audio: the model alone (MIC_TURN=smart, MIC_TURN_TRANSCRIPT_WAIT_MS=0);
- smart: the model, and the stt's speculative transcript of the speech so far: the bundled
  Whisper decodes the utterance when the stt worker's quiet rule says so, and its text
  reaches the end-pointer after the decode's measured time, as it would over the bus.

Every setting resumes a turn when speech starts again within MIC_TURN_RESUME_MS of its end
(the mic's default): a paused sentence cut at its pause and then resumed is one turn (the
stt hears it whole, the llm answers it once), counted as "resumed"; only a cut that is not
resumed is premature.

It reports, per setting: premature turns (a paused sentence cut in two), the sentences cut
and resumed, the end-of-turn wait on finished sentences (from the end of speech to the
decision, p50/p95), and the model's time per decision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ops.bench.stats import pct
from ops.bench.stt import BENCH_PHRASES, BENCH_VOICES, RATE, synth_espeak, trim, with_silence
from workers.stt.streaming import UtteranceAudio

#: One turn each, spoken with a pause where a sentence cannot end.
PAUSED = [
    ("Set a timer for", "ten minutes."),
    ("I would like to order", "a large pizza."),
    ("Add milk and", "bread to my list."),
    ("Remind me to call my", "mother tonight."),
    ("What is the weather", "like in Paris tomorrow?"),
    ("Play some music by", "the Beatles."),
    ("Turn on the lights in the", "living room."),
    ("Send a message to", "my brother."),
    ("How far is it from here to", "the station?"),
    ("Book a table for", "four people at eight."),
]
PAUSE_MS = 650
BLOCK = 320


@dataclass
class Clip:
    audio: np.ndarray
    paused: bool
    text: str
    voice: str = ""


@dataclass
class Result:
    premature: int = 0
    resumed: int = 0
    paused: int = 0
    waits_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    cut: list[str] = field(default_factory=list)
    """The paused sentences cut in two, with what ended the turn at the pause."""


def paused_clip(first: str, rest: str, voice: str, pause_ms: int = PAUSE_MS) -> np.ndarray:
    gap = np.zeros(RATE * pause_ms // 1000, np.int16)
    speech = np.concatenate(
        [trim(synth_espeak(first, voice)), gap, trim(synth_espeak(rest, voice))]
    )
    audio, _ = with_silence([speech], gap_ms=1500, lead_ms=500, noise=100)
    return audio


def make_clips(n_complete: int) -> list[Clip]:
    clips = []
    for i, (a, b) in enumerate(PAUSED * 2):
        voice = BENCH_VOICES[i // len(PAUSED) % len(BENCH_VOICES)]
        clips.append(Clip(paused_clip(a, b, voice), True, f"{a} ... {b}", voice))
    for i, phrase in enumerate(BENCH_PHRASES[:n_complete]):
        speech = trim(synth_espeak(phrase, BENCH_VOICES[i % len(BENCH_VOICES)]))
        audio, _ = with_silence([speech], gap_ms=1500, lead_ms=500, noise=100)
        clips.append(Clip(audio, False, phrase))
    return clips


def run_clip(clip: Clip, setting: str, model, stt, resume_ms: int) -> tuple[list, list, list]:  # type: ignore[no-untyped-def]
    """(starts, stops, decisions) of the end-pointer on one clip."""
    from workers.runtime.endpoint.endpointer import (
        SMART_SCORE_AHEAD_MS,
        SMART_TRANSCRIPT_WAIT_MS,
        Decision,
        EndpointConfig,
        Endpointer,
        Started,
        Stopped,
    )
    from workers.runtime.endpoint.vad import SileroVad

    if setting == "vad":
        cfg = EndpointConfig(turn="vad", hangover_ms=400, resume_ms=resume_ms)
        ep = Endpointer(SileroVad(), cfg)
    else:
        wait = 0 if setting == "smart-audio" else SMART_TRANSCRIPT_WAIT_MS
        cfg = EndpointConfig(
            turn="smart",
            transcript_wait_ms=wait,
            resume_ms=resume_ms,
            score_ahead_ms=SMART_SCORE_AHEAD_MS,
        )
        ep = Endpointer(SileroVad(), cfg, model)
    starts, stops, decisions = [], [], []
    start = 0  # stream sample where the open utterance starts
    pending: list[tuple[int, str, float]] = []  # (deliver at sample, text, audio ms)
    heard = UtteranceAudio(partial_interval_ms=0)  # the stt's own quiet rule
    for i in range(0, len(clip.audio), BLOCK):
        block = clip.audio[i : i + BLOCK]
        now = i + len(block)
        for seg in ep.feed(block):
            if isinstance(seg, Started):
                starts.append(seg)
                start = int(RATE * (seg.stream_offset_ms - seg.preroll_ms) / 1000)
                pending = []
                heard = UtteranceAudio(partial_interval_ms=0)
                for j in range(start, now - len(block), BLOCK):  # in the mic's 20 ms chunks
                    heard.add(clip.audio[j : min(j + BLOCK, now - len(block))].tobytes())
            elif isinstance(seg, Decision):
                decisions.append(seg)
            elif isinstance(seg, Stopped):
                stops.append(seg)
        if setting != "smart" or not ep.in_utterance:
            continue
        heard.add(block.tobytes())
        if heard.want_decode() == "quiet":
            n = heard.decode_started(quiet=True)
            audio = clip.audio[start : start + n].astype(np.float32) / 32768
            t0 = time.perf_counter()
            text = stt.transcribe(audio, final=True, language="en").text
            took = int(RATE * (time.perf_counter() - t0))
            pending.append((now + took, text, 1000.0 * n / RATE))
        while pending and now >= pending[0][0]:
            _, text, audio_ms = pending.pop(0)
            for seg in ep.hint(text, audio_ms):  # a pause that only waited for it ends now
                if isinstance(seg, Decision):
                    decisions.append(seg)
                elif isinstance(seg, Stopped):
                    stops.append(seg)
    for seg in ep.flush():
        if isinstance(seg, Stopped):
            stops.append(seg)
    return starts, stops, decisions


def why_ended(decisions: list) -> str:  # type: ignore[type-arg]
    """The first decision that ended a turn: its reason, model score and transcript tail."""
    d = next((d for d in decisions if d.outcome == "end"), None)
    if d is None:
        return "end of stream"
    score = f" score {d.score:.2f}" if d.score is not None else ""
    tail = f" on {d.transcript_tail!r}" if d.transcript_tail else ""
    return f"{d.reason}{score}{tail} after {d.silence_ms:.0f} ms of silence"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench turn", description=__doc__.split("\n")[0])
    ap.add_argument("--complete", type=int, default=20, help="finished sentences (default 20)")
    ap.add_argument(
        "--settings", default="vad,smart-audio,smart", help="comma-separated (default all)"
    )
    ap.add_argument(
        "--resume-ms",
        type=int,
        default=None,
        help="resume a turn on speech within this many ms of its end (default: the mic's "
        "MIC_TURN_RESUME_MS; 0 = off)",
    )
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = ap.parse_args(argv)
    from workers.mic.config import MicSettings

    resume_ms = (
        args.resume_ms if args.resume_ms is not None else MicSettings(_env_file=None).turn_resume_ms  # type: ignore[call-arg]
    )
    from workers.runtime.endpoint.turn import SmartTurn
    from workers.stt.backends import WhisperBackend
    from workers.stt.config import SttSettings

    print("bench turn: synthesizing ...", file=sys.stderr)
    clips = make_clips(args.complete)
    model = SmartTurn()
    stt = WhisperBackend(SttSettings(_env_file=None))  # type: ignore[call-arg]
    stt.load()
    settings = args.settings.split(",")
    results = {s: Result() for s in settings}
    # Settings alternate clip by clip, so a busy moment of the machine hits all of them.
    for clip in clips:
        for s in settings:
            starts, stops, decisions = run_clip(clip, s, model, stt, resume_ms)
            turns = sum(not st.resumes for st in starts)
            r = results[s]
            for d in decisions:
                r.reasons[d.reason] = r.reasons.get(d.reason, 0) + 1
                if d.score is not None and d.model_ms:
                    r.model_ms.append(d.model_ms)
            if clip.paused:
                r.paused += 1
                if turns != 1:
                    r.premature += 1
                    r.cut.append(f"{clip.text!r} ({clip.voice}): {why_ended(decisions)}")
                elif len(stops) > 1:
                    r.resumed += 1
            elif turns == 1:
                # The wait that ended the (last) utterance of the sentence.
                r.waits_ms.append(stops[-1].duration_ms - stops[-1].speech_end_offset_ms)
    n_paused = sum(c.paused for c in clips)
    print(
        f"\nEnd of turn on {n_paused} sentences with a {PAUSE_MS} ms pause and "
        f"{len(clips) - n_paused} finished ones (espeak-ng {', '.join(BENCH_VOICES)})"
    )
    print("wait = end of speech -> end-of-turn decision on finished sentences (+ chunk padding)")
    print(
        f"resumed = cut at the pause, then resumed as one turn "
        f"(speech again within {resume_ms} ms; MIC_TURN_RESUME_MS)"
    )
    print(
        f"{'setting':12} {'premature':>9} {'resumed':>7} {'wait p50':>9} {'wait p95':>9} "
        f"{'model':>7}  reasons"
    )
    report: dict[str, object] = {
        "paused": n_paused,
        "complete": len(clips) - n_paused,
        "resume_ms": resume_ms,
    }
    for s, r in results.items():
        row = {
            "premature": r.premature,
            "resumed": r.resumed,
            "premature_rate": r.premature / max(1, r.paused),
            "wait_p50_ms": pct(r.waits_ms, 0.5),
            "wait_p95_ms": pct(r.waits_ms, 0.95),
            "model_p50_ms": pct(r.model_ms, 0.5) if r.model_ms else 0.0,
            "reasons": r.reasons,
            "cut": r.cut,
        }
        report[s] = row
        print(
            f"{s:12} {r.premature:4}/{r.paused:<4} {r.resumed:7} {row['wait_p50_ms']:7.0f}ms "
            f"{row['wait_p95_ms']:7.0f}ms {row['model_p50_ms']:5.0f}ms  "
            + ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))
        )
    for s, r in results.items():
        for line in r.cut:
            print(f"  {s} cut {line}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
