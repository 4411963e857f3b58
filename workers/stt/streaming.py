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
            # Not while the audio is quiet: speech going quiet may be ending, and a partial
            # started now would hold the (serialised) decoder just when the quiet decode,
            # which the answer waits for, is due; and silence adds no words to decode.
            if self._frame_rms[-1] < QUIET_RATIO * self._peak:
                return None
            return "partial"
        return None

    def covers(self, samples: int, speech_end_ms: float) -> bool:
        # The VAD's speech end already lags the acoustic end by its own smoothing.
        return 1000.0 * samples / RATE >= speech_end_ms

    def grew_after(self, samples: int) -> bool:
        """Whether anything louder than the quiet threshold came after the first `samples`:
        then a decode of those samples is not a decode of the whole utterance."""
        if not self._frame_rms or self._peak <= 0:
            return False
        per_chunk = self.samples / len(self._frame_rms)
        first = int(np.ceil(samples / per_chunk))
        return any(r > QUIET_RATIO * self._peak for r in self._frame_rms[first:])

    def reusable(self, speech_end_ms: float) -> Decoded | None:
        """A final-quality decode of the whole utterance, if one was made while the
        end-pointer waited: it saw all the speech and nothing but silence came after it, so
        decoding again would give the same words. Anything else is decoded again, whole."""
        b = self.best
        if b is None or not b.final_quality:
            return None
        if not self.covers(b.samples, speech_end_ms) or self.grew_after(b.samples):
            return None
        # Whisper needs to hear the end of the last word: a decode cut within QUIET_MS of
        # the speech end was made before the utterance had gone quiet.
        if 1000.0 * b.samples / RATE < speech_end_ms + QUIET_MS / 2:
            return None
        return b.decoded


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
