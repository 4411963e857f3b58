"""A simulated room: the speaker's output comes back into the microphone.

`MIC_ROOM=loudspeaker` (`just demo --room loudspeaker`) adds to each captured block the
reply audio the speaker played at that moment (its `speaker.reference`, the same one the
echo canceller gets), through an echo path: a direct sound 40-120 ms late at about -6 dB,
a few weaker reflections after it, and a little noise. So echo, self-interruption and
barge-in can be seen on a machine without a sound card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.runtime.endpoint.reference import ReferenceBuffer
from workers.runtime.endpoint.vad import RATE


@dataclass(frozen=True)
class RoomConfig:
    delay_ms: float = 80.0
    """Direct sound: loudspeaker to microphone, plus the devices' latencies."""
    gain_db: float = -6.0
    reflections: tuple[tuple[float, float], ...] = ((11.0, -14.0), (23.0, -19.0), (41.0, -25.0))
    """(ms after the direct sound, dB) of each wall."""
    noise_dbfs: float = -62.0
    """White noise floor (fan, preamp)."""
    seed: int = 7


ROOMS = {"loudspeaker": RoomConfig()}


def impulse_response(cfg: RoomConfig) -> np.ndarray:
    taps = [(cfg.delay_ms, cfg.gain_db)] + [(cfg.delay_ms + d, g) for d, g in cfg.reflections]
    ir = np.zeros(round(max(t for t, _ in taps) * RATE / 1000) + 1)
    for t, g in taps:
        ir[round(t * RATE / 1000)] += 10 ** (g / 20)
    return ir


class Room:
    """Adds the echo of what the speaker played (from `buffer`) to the mic's blocks."""

    def __init__(self, buffer: ReferenceBuffer, cfg: RoomConfig | None = None) -> None:
        self.cfg = cfg or RoomConfig()
        if not 40 <= self.cfg.delay_ms <= 120:
            raise ValueError(f"room delay {self.cfg.delay_ms} ms: want 40-120")
        self.buffer = buffer
        self.ir = impulse_response(self.cfg)
        self._rng = np.random.default_rng(self.cfg.seed)
        self._noise = 32768.0 * 10 ** (self.cfg.noise_dbfs / 20)

    def mix(self, block: np.ndarray, captured_at: float) -> np.ndarray:
        n = len(block)
        end = ReferenceBuffer.index(captured_at)
        # The echo at each instant is the reference up to one impulse response earlier.
        far = self.buffer.read(end - n - len(self.ir) + 1, n + len(self.ir) - 1)
        echo = np.convolve(far.astype(np.float64), self.ir, mode="valid")
        noise = self._rng.normal(0.0, self._noise, n)
        x = block.astype(np.float64) + echo + noise
        return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def make_room(name: str, buffer: ReferenceBuffer) -> Room:
    try:
        return Room(buffer, ROOMS[name])
    except KeyError:
        raise ValueError(f"MIC_ROOM={name}: want one of {', '.join(ROOMS)}") from None
