"""Both sides of a conversation on one timeline: DATA_DIR/replies/<conversation>/conversation.wav.

The user's utterances are placed where the speaker heard them begin (voice-started, minus the
pre-roll) and each reply where its playback began, truncated where it was interrupted, so a
barge-in sounds like one: the user talking over the assistant, who then stops.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from workers.runtime.audio import float_to_pcm16, pcm16_to_float, resample_pcm16, write_wav


class ConversationTape:
    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.t0: float | None = None
        self._mix = np.zeros(0, dtype=np.float32)
        self._user_anchor: dict[str, float] = {}

    def _place(self, at: float, pcm: bytes, rate: int) -> None:
        if self.t0 is None:
            self.t0 = at
        x = pcm16_to_float(resample_pcm16(pcm, rate, self.rate))
        start = max(0, int((at - self.t0) * self.rate))
        end = start + len(x)
        if end > len(self._mix):
            self._mix = np.concatenate([self._mix, np.zeros(end - len(self._mix), np.float32)])
        self._mix[start:end] += x

    def user_started(self, utterance_id: str, preroll_ms: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._user_anchor[utterance_id] = now - preroll_ms / 1000.0

    def user_audio(self, utterance_id: str, offset_ms: float, pcm: bytes, rate: int) -> None:
        anchor = self._user_anchor.setdefault(utterance_id, time.monotonic() - offset_ms / 1000.0)
        self._place(anchor + offset_ms / 1000.0, pcm, rate)

    def reply_audio(self, started_at: float, pcm: bytes, rate: int) -> None:
        self._place(started_at, pcm, rate)

    def save(self) -> Path:
        return write_wav(self.path, float_to_pcm16(self._mix).tobytes(), self.rate)
