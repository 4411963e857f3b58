"""Per-utterance streaming state: audio so far, when to decode a partial, what is stable.

Kept free of the bus so the policy is readable (and testable) on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.stt.backends import Decoded

RATE = 16_000
#: Trailing audio this quiet (relative to the loudest 20 ms so far) looks like speech end:
#: -36 dB. A final fricative ("France?", "minutes.") sits at 2-5 % of the vowels' peak, and
#: a decode started in it has not heard the last word (the end-pointer does not take such
#: a transcript as the speech so far, and the turn waited for its max silence).
QUIET_RATIO = 0.015
#: In a noisier room quiet is within this factor of the quietest 20 ms heard (the
#: utterance's pre-roll is room noise)...
NOISE_MARGIN = 3.0
#: ...but never above this fraction of the peak: below about 24 dB of speech over noise no
#: audio is taken as quiet and the final decode waits for the end-pointer.
QUIET_MAX_RATIO = 0.06
QUIET_MS = 160
#: A decode at the first quiet may still have been cut inside a soft last sound: if the
#: quiet goes on this long after it, the utterance is decoded once more (what the
#: end-pointer, holding the turn for a transcript of the whole speech, waits for).
CONFIRM_MS = 320


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
        self.last_decode_at = 0  # samples received when the last decode started
        self.decoded_to = 0
        """Samples the last decode started covers (a quiet decode stops short of the
        quiet's end)."""
        self._peak = 0.0
        self._floor = float("inf")
        self._frame_rms: list[float] = []
        self.quiet_decodes = 0
        """Quiet decodes since the speech last went on (the first and one confirmation)."""
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
        if len(a):
            self._floor = min(self._floor, rms)
        if rms > self.quiet_level():
            self.quiet_decodes = 0  # speech again: a new speech end may follow

    def quiet_level(self) -> float:
        """RMS (of 20 ms) below which audio counts as quiet in this utterance."""
        noise = NOISE_MARGIN * self._floor if self._floor != float("inf") else 0.0
        return min(QUIET_MAX_RATIO * self._peak, max(QUIET_RATIO * self._peak, noise))

    def audio(self, samples: int | None = None) -> np.ndarray:
        a = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return (a[:samples] if samples is not None else a).astype(np.float32) / 32768.0

    def trailing_quiet(self, ms: float = QUIET_MS) -> bool:
        """The last `ms` look like silence after speech: speech has probably ended."""
        if not self._frame_rms or self._peak <= 0:
            return False
        ms_per_chunk = 1000.0 * self.samples / RATE / len(self._frame_rms)
        n = max(1, int(ms / ms_per_chunk))
        if len(self._frame_rms) <= n:
            return False
        return max(self._frame_rms[-n:]) < self.quiet_level()

    def want_decode(self) -> str | None:
        """'quiet' (speculative final at an apparent speech end), 'partial', or None."""
        if self.samples == 0:
            return None
        if not self.quiet_decodes and self.trailing_quiet():
            return "quiet"
        if (
            self.quiet_decodes == 1
            and self.samples - self.last_decode_at >= RATE * CONFIRM_MS // 1000
            and self.trailing_quiet(QUIET_MS + CONFIRM_MS)
        ):
            return "quiet"
        if self.partial_interval and self.samples - self.last_decode_at >= self.partial_interval:
            # Not while the audio is quiet: speech going quiet may be ending, and a partial
            # started now would hold the (serialised) decoder just when the quiet decode,
            # which the answer waits for, is due; and silence adds no words to decode.
            if self._frame_rms[-1] < self.quiet_level():
                return None
            return "partial"
        return None

    def decode_started(self, quiet: bool) -> int:
        """Note a decode starting now (a quiet one, if `quiet`); the samples it is to decode.

        A partial decodes all the audio so far. A quiet decode hears the speech and the same
        stretch of quiet after it however late it starts (QUIET_MS; its confirmation
        QUIET_MS + CONFIRM_MS): on a busy machine the decoder may still be on a partial when
        the quiet comes, and Whisper given a longer silence after "Set a timer for" hears
        words that were not said ("Set a timer for it"), which would end the turn at the
        pause. The same audio gives the same words, loaded or not."""
        self.last_decode_at = self.samples
        samples = self.samples
        if quiet:
            window_ms = QUIET_MS if self.quiet_decodes == 0 else QUIET_MS + CONFIRM_MS
            samples = min(samples, self.quiet_from() + RATE * window_ms // 1000)
            self.quiet_decodes += 1
        self.decoded_to = samples
        return samples

    def quiet_from(self) -> int:
        """Where the trailing quiet begins: the end of the last chunk louder than quiet (all
        the audio if none is)."""
        level = self.quiet_level()
        loud = [i for i, rms in enumerate(self._frame_rms) if rms > level]
        if not loud:
            return self.samples
        per_chunk = self.samples / len(self._frame_rms)
        return round((loud[-1] + 1) * per_chunk)

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
        level = self.quiet_level()
        return any(r > level for r in self._frame_rms[first:])

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
