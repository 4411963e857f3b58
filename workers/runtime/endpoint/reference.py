"""The echo reference: what the speaker plays, on one clock with what the mic captures.

Mic and speaker are separate processes that share only the bus, so they share a clock the
way two machines would: wall-clock time. The speaker publishes each piece of reply audio as
it queues it, resampled to 16 kHz and stamped with when its first sample reaches the listener
(`played_at`: now plus what is queued ahead of it on the output's own clock), as a
`speaker.reference` on core NATS (`live.<endpoint>.<conversation>.speaker.reference`, never
stored). A halt (barge-in) is published too: nothing after it was heard.

The mic keeps the reference in a `ReferenceBuffer` indexed by absolute sample time (Unix
seconds x 16 000) and reads, for each captured block, the reference samples of the same
instants. Audio is queued ahead of playback, so the reference is normally there before the
mic needs it; what is left of the acoustic delay (the room, device latencies) is the echo
canceller's filter tail to find.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from schemas import (
    EventDecodeError,
    SpeakerReference,
    decode,
    encode,
    live_subject_filter,
    live_subject_for,
)
from workers.runtime.endpoint.vad import RATE

log = logging.getLogger("voicebus.reference")

#: How much reference the mic keeps, seconds (past and future of now).
KEEP_S = 30.0

_tasks: set[asyncio.Task] = set()


class ReferenceStream:
    """Speaker side, one reply: resamples what is queued to 16 kHz and stamps it."""

    @staticmethod
    def play_time(out) -> float:  # type: ignore[no-untyped-def]
        """When audio queued now on `out` is heard: after what is queued ahead of it."""
        return time.time() + max(0, out.queued() - out.played()) / out.rate

    def __init__(self, bus, rate: int, common: dict[str, str], producer: str) -> None:  # type: ignore[no-untyped-def]
        self.bus = bus
        self.rate = rate
        self.common = common
        self.producer = producer
        self._in = 0
        self._out = 0
        self._resampler = None
        if rate != RATE:
            import soxr

            # One stream per reply: per-chunk resampling would click at every chunk edge.
            self._resampler = soxr.ResampleStream(rate, RATE, 1, dtype="int16")

    def queued(self, pcm: bytes, played_at: float) -> None:
        """`pcm` (the reply's rate) was queued; its first sample is heard at `played_at`."""
        a = np.frombuffer(pcm, dtype="<i2")
        # The resampler holds back a few samples: the output continues where the previous
        # output ended on the input's timeline.
        lag = self._in / self.rate - self._out / RATE
        out = a if self._resampler is None else self._resampler.resample_chunk(a)
        self._in += len(a)
        self._out += len(out)
        if len(out):
            self._send(out.astype("<i2").tobytes(), played_at - lag, False)

    def halted(self, at: float) -> None:
        self._send(b"", at, True)

    def _send(self, audio: bytes, played_at: float, halted: bool) -> None:
        # Called where audio is queued (sync code): published in order by the event loop.
        task = asyncio.get_running_loop().create_task(self._publish(audio, played_at, halted))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    async def _publish(self, audio: bytes, played_at: float, halted: bool) -> None:
        ev = SpeakerReference(
            producer=self.producer,
            audio=audio,
            played_at=max(0.0, played_at),
            halted=halted,
            **self.common,
        )
        try:
            await self.bus.nc.publish(live_subject_for(ev), encode(ev))
        except Exception as exc:  # the reference is best effort: playback goes on without it
            log.warning("reference not published", extra={"error": str(exc)})


@dataclass
class Span:
    """One reply's stretch of reference, in absolute samples."""

    utterance_id: str
    conversation_id: str
    start: int
    end: int
    halted_at: int | None = None


class ReferenceBuffer:
    """Mic side: the speaker's output by absolute sample time (zeros where nothing played)."""

    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.size = int(keep_s * RATE)
        self._ring = np.zeros(self.size, dtype=np.int16)
        self._low = 0
        """Oldest absolute sample index the ring holds."""
        self.spans: dict[str, Span] = {}
        self.received = 0
        self.history: list[int] = []
        """Where each reply's reference started (absolute samples), oldest first."""
        self.last_heard = 0
        """Where the last heard reference ends (absolute samples)."""

    @staticmethod
    def index(t: float) -> int:
        return round(t * RATE)

    def _slots(self, start: int, n: int) -> np.ndarray:
        return np.arange(start, start + n) % self.size

    def write(self, ev: SpeakerReference) -> None:
        self.received += 1
        start = self.index(ev.played_at)
        span = self.spans.get(ev.utterance_id)
        if ev.halted:
            if span is not None:
                span.halted_at = start
                span.end = min(span.end, start)
            others = [s.end for s in self.spans.values() if s is not span]
            self.last_heard = min(self.last_heard, max([start, *others]))
            # Queued but never heard: not echo.
            high = start + self.size // 2
            lo = max(start, self._low)
            if high > lo:
                self._ring[self._slots(lo, high - lo)] = 0
            return
        a = np.frombuffer(ev.audio, dtype="<i2")
        if not len(a):
            return
        if span is None:
            span = self.spans[ev.utterance_id] = Span(
                ev.utterance_id, ev.conversation_id, start, start + len(a)
            )
            self.history.append(start)
        else:
            span.start = min(span.start, start)
            span.end = max(span.end, start + len(a))
        if span.halted_at is not None and start >= span.halted_at:
            return
        self.last_heard = max(self.last_heard, start + len(a))
        now = self.index(time.time())
        self._low = max(self._low, now - self.size // 2)
        keep = (start + np.arange(len(a)) >= self._low) & (
            start + np.arange(len(a)) < now + self.size // 2
        )
        self._ring[self._slots(start, len(a))[keep]] = a[keep]

    def read(self, start: int, n: int) -> np.ndarray:
        """`n` samples from absolute index `start` (zeros for what is not held)."""
        out = self._ring[self._slots(start, n)].copy()
        if start < self._low:
            out[: min(n, self._low - start)] = 0
        return out

    def span_at(self, index: int) -> Span | None:
        for span in self.spans.values():
            if span.start <= index < span.end:
                return span
        return None

    def ended(self, before: int) -> list[Span]:
        """Spans that ended before absolute index `before` (each returned once)."""
        done = [s for s in self.spans.values() if s.end < before]
        for s in done:
            del self.spans[s.utterance_id]
        return done

    def last_end(self) -> int:
        return max((s.end for s in self.spans.values()), default=0)


async def subscribe_reference(bus, endpoint: str, buffer: ReferenceBuffer):  # type: ignore[no-untyped-def]
    """Follow every reply the endpoint's speaker plays into `buffer` (all conversations of
    the endpoint: whatever its loudspeaker plays is echo at its microphone)."""

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        try:
            ev = decode(msg.data)
        except EventDecodeError as exc:
            log.warning("bad reference dropped", extra={"reason": exc.reason})
            return
        if isinstance(ev, SpeakerReference):
            buffer.write(ev)

    subject = live_subject_filter(endpoint, "*", SpeakerReference.type)
    return await bus.nc.subscribe(subject, cb=on_msg, pending_bytes_limit=-1)
