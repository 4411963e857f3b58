"""Per-utterance streaming state: audio so far, when to decode a partial, what is stable.

Kept free of the bus so the policy is readable (and testable) on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.stt.backends import Decoded

RATE = 16_000
#: Trailing audio this quiet (relative to the loudest 20 ms so far) looks like speech end.
QUIET_RATIO = 0.06
QUIET_MS = 160


@dataclass
class Coverage:
    """A finished decode and how much of the utterance it saw."""

    decoded: Decoded
    samples: int
    final_quality: bool


class UtteranceAudio:
    def __init__(self, partial_interval_ms: int) -> None:
        self._chunks: list[np.ndarray] = []
        self.samples = 0
        self.next_chunk_seq = 0
        self.partial_interval = RATE * partial_interval_ms // 1000
        self.last_decode_at = 0  # samples covered by the last decode started
        self._peak = 0.0
        self._frame_rms: list[float] = []
        self.quiet_decode_done = False
        self.best: Coverage | None = None
        self.last_partial_text = ""

    def add(self, pcm: bytes) -> None:
        a = np.frombuffer(pcm, dtype="<i2")
        self._chunks.append(a)
        self.samples += len(a)
        self.next_chunk_seq += 1
        rms = float(np.sqrt(np.mean(a.astype(np.float32) ** 2))) if len(a) else 0.0
        self._frame_rms.append(rms)
        self._peak = max(self._peak, rms)
        if rms > QUIET_RATIO * self._peak:
            self.quiet_decode_done = False  # speech again: a new speech end may follow

    def audio(self, samples: int | None = None) -> np.ndarray:
        a = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return (a[:samples] if samples is not None else a).astype(np.float32) / 32768.0

    def trailing_quiet(self) -> bool:
        """The last QUIET_MS look like silence after speech: speech has probably ended."""
        if not self._frame_rms or self._peak <= 0:
            return False
        ms_per_chunk = 1000.0 * self.samples / RATE / len(self._frame_rms)
        n = max(1, int(QUIET_MS / ms_per_chunk))
        if len(self._frame_rms) <= n:
            return False
        return max(self._frame_rms[-n:]) < QUIET_RATIO * self._peak

    def want_decode(self) -> str | None:
        """'quiet' (speculative final at an apparent speech end), 'partial', or None."""
        if self.samples == 0:
            return None
        if not self.quiet_decode_done and self.trailing_quiet():
            return "quiet"
        if self.partial_interval and self.samples - self.last_decode_at >= self.partial_interval:
            return "partial"
        return None

    def covers(self, samples: int, speech_end_ms: float) -> bool:
        # The VAD's speech end already lags the acoustic end by its own smoothing.
        return 1000.0 * samples / RATE >= speech_end_ms

    def reusable(self, speech_end_ms: float) -> Decoded | None:
        """A final-quality decode that already saw all the speech, if any."""
        b = self.best
        if b is None or not b.final_quality:
            return None
        if self.covers(b.samples, speech_end_ms):
            return b.decoded
        return None


def stable_prefix(previous: str, current: str) -> int:
    """Length of the word-aligned common prefix of two partials (local agreement)."""
    n = 0
    for i, (a, b) in enumerate(zip(previous, current, strict=False)):
        if a != b:
            break
        if a == " ":
            n = i
    else:
        if len(previous) <= len(current) and current[len(previous) : len(previous) + 1] in (
            "",
            " ",
        ):
            n = len(previous)
    return n
