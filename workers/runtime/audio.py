"""PCM helpers shared by the audio workers: reading any WAV, resampling, writing WAVs."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from schemas import PIPELINE_RATE


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message says what is wrong and what to do."""


def read_audio(path: str | Path, rate: int = PIPELINE_RATE) -> np.ndarray:
    """Read a WAV (any rate, channel count, PCM width or float) as mono int16 at `rate`."""
    import soundfile as sf  # libsndfile, bundled in the wheel

    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, expected a WAV file")
    try:
        data, file_rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(
            f"{p}: not a readable audio file ({exc}); give a WAV file, e.g. 16 kHz mono 16-bit"
        ) from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: contains no audio samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioFileError(f"{p}: contains NaN or infinite samples")
    return float_to_pcm16(resample_float(mono, int(file_rate), rate))


def resample_float(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ")


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    if from_rate == to_rate:
        return pcm
    x = pcm16_to_float(pcm)
    return float_to_pcm16(resample_float(x, from_rate, to_rate)).tobytes()


def pcm16_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) else pcm
    return a.astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16; NaN/inf become silence/full scale instead of garbage."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


def write_wav(path: str | Path, pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return p


def duration_ms(n_bytes: int, rate: int, width: int = 2, channels: int = 1) -> float:
    return 1000.0 * n_bytes / (rate * width * channels)
