"""Acoustic echo cancellation in the mic path, before VAD, wake word and STT.

`make_canceller(MIC_AEC)`: "speex" (libspeexdsp through `speexdsp-aec`, the default: ~30 dB
after a few seconds and the user's voice intact in double talk), "webrtc" (WebRTC AEC3 from
the `livekit` wheel: more suppression, but it damages speech during double talk) or "off".

`EchoPath` runs one on the microphone's blocks with the speaker's reference read for the same
instants (`reference.ReferenceBuffer`), then gates what is left: while a reply plays, a block
passes only when the cancelled signal is clearly louder than the residual echo expected from
the reference, so the VAD hears the user, not the loudspeaker. It also measures echo return
loss enhancement (ERLE) per reply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workers.runtime.endpoint.reference import ReferenceBuffer, Span
from workers.runtime.endpoint.vad import RATE


class AecError(RuntimeError):
    """A canceller that cannot be used; the message says what to install or set."""


class Canceller(Protocol):
    name: str

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Cancel `far`'s echo from `near` (same length, int16); returns as many samples."""
        ...


class NoCanceller:
    name = "off"

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return near


class SpeexCanceller:
    """Speex's multi-delay adaptive filter (MDF), 20 ms frames."""

    name = "speex"

    def __init__(self, tail_ms: int = 200, frame_ms: int = 20) -> None:
        try:
            from speexdsp_aec import SpeexAec
        except ImportError:
            raise AecError("MIC_AEC=speex needs speexdsp-aec: `pip install speexdsp-aec`") from None
        try:
            self._aec = SpeexAec(sample_rate=RATE, frame_ms=frame_ms, filter_tail_ms=tail_ms)
        except RuntimeError:
            raise AecError(
                "MIC_AEC=speex needs libspeexdsp: `apt-get install libspeexdsp1` (or MIC_AEC=off)"
            ) from None
        self._out = np.zeros(0, dtype=np.int16)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        got = np.frombuffer(self._aec.process(near, far), dtype="<i2")
        # Whole frames come out; blocks that are not a multiple of the frame are delayed by
        # the remainder (none at the default 20 ms blocks).
        self._out = np.concatenate([self._out, got])
        if len(self._out) < len(near):
            pad = np.zeros(len(near) - len(self._out), dtype=np.int16)
            self._out = np.concatenate([pad, self._out])
        out, self._out = self._out[: len(near)], self._out[len(near) :]
        return out


class WebRtcCanceller:
    """WebRTC AEC3 (livekit's AudioProcessingModule), 10 ms frames."""

    name = "webrtc"
    frame = RATE // 100

    def __init__(self, delay_ms: int = 0) -> None:
        try:
            from livekit import rtc
        except ImportError:
            raise AecError(
                "MIC_AEC=webrtc needs the livekit wheel: `pip install livekit` (or MIC_AEC=speex)"
            ) from None
        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True)
        self._delay_ms = delay_ms
        self._near = np.zeros(0, dtype=np.int16)
        self._far = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)

    def _frame(self, a: np.ndarray):  # type: ignore[no-untyped-def]
        return self._rtc.AudioFrame(a.astype("<i2").tobytes(), RATE, 1, len(a))

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        self._near = np.concatenate([self._near, near])
        self._far = np.concatenate([self._far, far])
        outs = [self._out]
        while len(self._near) >= self.frame:
            f_far = self._frame(self._far[: self.frame])
            f_near = self._frame(self._near[: self.frame])
            self._apm.process_reverse_stream(f_far)
            self._apm.set_stream_delay_ms(self._delay_ms)
            self._apm.process_stream(f_near)  # in place
            outs.append(np.frombuffer(bytes(f_near.data), dtype="<i2").copy())
            self._near, self._far = self._near[self.frame :], self._far[self.frame :]
        out = np.concatenate(outs)
        if len(out) < len(near):
            out = np.concatenate([np.zeros(len(near) - len(out), dtype=np.int16), out])
        res, self._out = out[: len(near)], out[len(near) :]
        return res


def make_canceller(name: str, tail_ms: int = 200) -> Canceller:
    if name == "speex":
        return SpeexCanceller(tail_ms)
    if name == "webrtc":
        return WebRtcCanceller()
    if name == "off":
        return NoCanceller()
    raise AecError(f"MIC_AEC={name}: want speex, webrtc or off")


def _energy(a: np.ndarray) -> float:
    x = a.astype(np.float64)
    return float(np.dot(x, x)) / max(1, len(x))


@dataclass
class ReplyEcho:
    """What the canceller did during one reply."""

    utterance_id: str
    conversation_id: str
    canceller: str
    mic_energy: float = 0.0
    out_energy: float = 0.0
    echo_blocks: int = 0
    gated_blocks: int = 0
    block_ms: float = 20.0

    @property
    def erle_db(self) -> float | None:
        if not self.echo_blocks or self.mic_energy <= 0:
            return None
        return round(10 * math.log10(self.mic_energy / max(self.out_energy, 1e-3)), 2)

    @property
    def echo_ms(self) -> float:
        return self.echo_blocks * self.block_ms

    @property
    def gated_ms(self) -> float:
        return self.gated_blocks * self.block_ms


@dataclass(frozen=True)
class GateConfig:
    margin_db: float = 8.0
    """A block is the user's voice when it is this much louder than the expected residual."""
    hold_ms: float = 240.0
    """Once the user is heard, the gate stays open this long (word gaps, soft endings)."""
    floor_energy: float = 30.0**2
    """Reference quieter than this (int16 RMS 30, about -60 dBFS) is not playing."""


class EchoPath:
    """The mic's blocks -> echo cancelled and gated, with the reference from `buffer`.

    `delay_ms` reads the reference that much earlier than the block's capture time: the part
    of the device's latency its timestamps do not show (0 for the file source and the room
    simulation). The filter tail (`MIC_AEC_TAIL_MS`) must cover the acoustic delay on top.
    """

    def __init__(
        self,
        canceller: Canceller,
        buffer: ReferenceBuffer,
        delay_ms: float = 0.0,
        tail_ms: float = 200.0,
        gate: GateConfig | None = None,
        gate_on: bool = True,
    ) -> None:
        self.canceller = canceller
        self.buffer = buffer
        self.delay = round(delay_ms * RATE / 1000)
        self.tail = round(tail_ms * RATE / 1000)
        self.gate = gate or GateConfig()
        self.gate_on = gate_on
        # The echo path's gain (mic over reference) and the share the canceller leaves, both
        # learned on echo-only blocks; pessimistic at the start (an unconverged filter leaves
        # all of an echo as loud as the reference).
        self._path_gain = 1.0
        self._residual = 1.0
        self._open_until = -1
        self._far_recent: list[float] = []
        self.replies: dict[str, ReplyEcho] = {}

    def process(self, block: np.ndarray, captured_at: float) -> np.ndarray:
        """One block whose last sample was captured at `captured_at` (Unix seconds)."""
        if not self.buffer.received:
            return block  # nothing ever played here: no echo to cancel
        n = len(block)
        end = ReferenceBuffer.index(captured_at) - self.delay
        start = end - n
        far = self.buffer.read(start, n)
        out = self.canceller.process(block, far)
        far_e = _energy(far)
        # The echo of the last `tail` of reference can still be arriving.
        self._far_recent.append(far_e)
        keep = max(1, -(-self.tail // n) + 1)
        del self._far_recent[:-keep]
        far_max = max(self._far_recent)
        if far_max < self.gate.floor_energy:
            return out
        span = self.buffer.span_at(start) or self.buffer.span_at(start - self.tail)
        mic_e, out_e = _energy(block), _energy(out)
        expected = far_max * self._path_gain * self._residual
        voice = out_e > expected * 10 ** (self.gate.margin_db / 10)
        if voice:
            self._open_until = end + round(self.gate.hold_ms * RATE / 1000)
        elif end > self._open_until:
            # Echo only: learn the path and the residual, count it toward ERLE.
            if far_e >= self.gate.floor_energy:
                g = mic_e / far_max
                self._path_gain += 0.05 * (min(g, 4.0) - self._path_gain)
                r = out_e / max(mic_e, 1.0)
                self._residual += 0.1 * (min(r, 1.0) - self._residual)
            if span is not None:
                stats = self._reply(span)
                stats.mic_energy += mic_e
                stats.out_energy += out_e
                stats.echo_blocks += 1
            if self.gate_on:
                if span is not None:
                    self._reply(span).gated_blocks += 1
                return np.zeros_like(out)
        return out

    def _reply(self, span: Span) -> ReplyEcho:
        r = self.replies.get(span.utterance_id)
        if r is None:
            r = self.replies[span.utterance_id] = ReplyEcho(
                span.utterance_id, span.conversation_id, self.canceller.name
            )
        return r

    def finished(self, captured_at: float) -> list[ReplyEcho]:
        """Replies whose echo has died away by `captured_at` (each returned once)."""
        now = ReferenceBuffer.index(captured_at) - self.delay - self.tail
        out = []
        for span in self.buffer.ended(now):
            out.append(
                self.replies.pop(span.utterance_id, None)
                or ReplyEcho(span.utterance_id, span.conversation_id, self.canceller.name)
            )
        return out
