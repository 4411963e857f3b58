"""Wake word: an always-on mic answers only what is said after its name.

`MIC_WAKE_WORD=okay_nabu` (or hey_jarvis, hey_mycroft, alexa) runs the microWakeWord TFLite
model shipped in the `pymicro-wakeword` wheel on the (echo-cancelled) stream, 10 ms at a
time. Until the phrase is heard the end-pointer gets silence, so nothing becomes a turn; from
the detection on (plus `SKIP_MS` for the phrase's last sound, which the model fires within)
it gets the audio, for one utterance or until `AWAKE_S` passes without one. After a reply, the
follow-up window (`MIC_FOLLOW_UP_S`) listens without the phrase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.runtime.endpoint.vad import RATE

NAMES = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
#: The model fires near the end of the phrase; this much more is left out of the turn.
SKIP_MS = 150
#: Woken, the user has this long to start speaking.
AWAKE_S = 5.0


class WakeError(RuntimeError):
    """A wake word that cannot be used; the message says why."""


@dataclass(frozen=True)
class Detection:
    name: str
    score: float
    offset_ms: float
    """Where the detection fired in the mic stream, milliseconds from its start."""


class WakeWord:
    def __init__(self, name: str) -> None:
        if name not in NAMES:
            raise WakeError(f"MIC_WAKE_WORD={name}: want one of {', '.join(NAMES)} (or empty)")
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError:
            raise WakeError("MIC_WAKE_WORD needs `pip install pymicro-wakeword`") from None
        self.name = name
        self._model = MicroWakeWord.from_builtin(Model(name))
        self._features = MicroWakeWordFeatures()
        self._pending = np.zeros(0, dtype=np.int16)
        self._samples = 0
        self._probs: list[float] = []

    def feed(self, block: np.ndarray) -> Detection | None:
        """Audio in 16 kHz int16; the detection, if the phrase ended in this block."""
        x = np.concatenate([self._pending, block.astype(np.int16, copy=False)])
        step = RATE // 100
        n = len(x) // step * step
        found = None
        for i in range(0, n, step):
            self._samples += step
            for f in self._features.process_streaming(x[i : i + step].astype("<i2").tobytes()):
                p = self._model.process_streaming_prob(f)
                if p is not None and p > self._model.probability_cutoff and found is None:
                    found = Detection(self.name, round(float(p), 3), 1000.0 * self._samples / RATE)
        self._pending = x[n:]
        if found is not None:
            self._model.reset()  # one detection per phrase
        return found


class WakeGate:
    """Decides, per block, whether the end-pointer hears the mic or silence."""

    def __init__(self, wake: WakeWord, follow_up_s: float = 5.0) -> None:
        self.wake = wake
        self.follow_up_s = follow_up_s
        self._open_from: float | None = None
        self._open_until = 0.0
        self.in_turn = False

    def follow_up(self, until: float) -> None:
        """Listen without the phrase until `until` (Unix seconds)."""
        self._open_from = self._open_from if self._open_from is not None else 0.0
        self._open_until = max(self._open_until, until)

    def feed(self, block: np.ndarray, at: float) -> tuple[np.ndarray, Detection | None]:
        found = self.wake.feed(block)
        if found is not None:
            self._open_from = at + SKIP_MS / 1000
            self._open_until = at + AWAKE_S
        is_open = self.in_turn or (
            self._open_from is not None and self._open_from <= at <= self._open_until
        )
        return (block if is_open else np.zeros_like(block)), found

    def utterance(self, going_on: bool) -> None:
        """After each block: whether the end-pointer is inside an utterance."""
        if going_on:
            self.in_turn = True
        elif self.in_turn:
            self.turn_ended()

    def turn_ended(self) -> None:
        self.in_turn = False
        self._open_from = None
        self._open_until = 0.0
