"""Where reply audio goes, behind one interface: a WAV file on a simulated playback clock, or
a sound card through sounddevice. Both answer the one question barge-in needs: how many
samples has the listener heard so far?"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from workers.runtime.audio import write_wav


class SpeakerError(RuntimeError):
    """The sink cannot play; the message says what to do."""


class Output(Protocol):
    """One reply's way to the ear."""

    rate: int

    def write(self, pcm: bytes) -> None:
        """Queue int16 mono audio behind what is queued (never blocks)."""

    def queued(self) -> int:
        """Samples written so far."""

    def played(self) -> int:
        """Samples the listener has heard so far (<= queued)."""

    def halt(self) -> int:
        """Stop at once, drop the rest; returns the samples heard."""

    def close(self) -> str:
        """Release the output; returns the WAV path written ("" if none)."""


class Sink(Protocol):
    kind: str

    def open(self, rate: int, conversation_id: str, utterance_id: str) -> Output: ...


class ClockedOutput:
    """Playback simulated against a monotonic clock: audio starts when written and plays at
    `rate` samples per second; when the queue runs dry the clock waits for more (an
    underrun, like a device playing silence). Keeps what it plays for the WAV file."""

    def __init__(
        self,
        rate: int,
        path: Path | None,
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.path = path
        self.realtime = realtime
        self.clock = clock
        self._pcm = bytearray()
        self._queued = 0
        self._base_t = 0.0
        self._base_pos = 0
        self._halted: int | None = None

    def write(self, pcm: bytes) -> None:
        if self._halted is not None:
            return
        now = self.clock()
        if self.played(now) >= self._queued:  # dry (or first write): playout restarts now
            self._base_t, self._base_pos = now, self._queued
        self._pcm += pcm
        self._queued += len(pcm) // 2

    def queued(self) -> int:
        return self._queued

    def played(self, now: float | None = None) -> int:
        if self._halted is not None:
            return self._halted
        if not self.realtime:
            return self._queued
        if not self._queued:
            return 0
        elapsed = (self.clock() if now is None else now) - self._base_t
        return min(self._queued, self._base_pos + int(elapsed * self.rate + 1e-6))

    def halt(self) -> int:
        if self._halted is None:
            self._halted = self.played()
        return self._halted

    def close(self) -> str:
        heard = self.halt()
        if self.path is None:
            return ""
        write_wav(self.path, bytes(self._pcm[: 2 * heard]), self.rate)
        return str(self.path)

    def heard_pcm(self) -> bytes:
        return bytes(self._pcm[: 2 * self.played()])


class WavSink:
    """Each reply to DATA_DIR/replies/<conversation>/<utterance>.wav, truncated where the
    listener stopped hearing it."""

    kind = "wav"

    def __init__(self, folder: Path, realtime: bool = True) -> None:
        self.folder = Path(folder)
        self.realtime = realtime

    def open(self, rate: int, conversation_id: str, utterance_id: str) -> ClockedOutput:
        path = self.folder / conversation_id / f"{utterance_id}.wav"
        return ClockedOutput(rate, path, self.realtime)


class DeviceOutput:
    """A sounddevice output stream fed from a queue by PortAudio's callback; the device's
    own clock says what was heard.

    Each callback says when its buffer reaches the DAC (`time.outputBufferDacTime`, on the
    stream's clock); a sample counts as heard once the stream time (`Stream.time`) has passed
    its DAC time. So a reply is heard whole exactly one output latency after its last sample
    was handed over, and a halt reports only what already left the DAC (abort drops the
    rest). Host APIs that report no times (0) fall back to the monotonic clock plus the
    stream's nominal latency."""

    def __init__(self, sd, rate: int, device: str | int | None) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self._lock = threading.Lock()
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._consumed = 0
        self._halted: int | None = None
        self._pcm = bytearray()
        self._spans: collections.deque[tuple[float, int, int]] = collections.deque()
        """(DAC time of its first sample, index of that sample in the reply, samples) of
        every buffer that carried reply audio and is not yet wholly heard."""
        self._heard = 0
        """Reply samples known to have left the DAC (spans wholly heard)."""
        self._host_times = True
        """The host API reports stream times; else the monotonic clock stands in."""
        self._latency_s = 0.0
        try:
            self._stream = sd.OutputStream(
                samplerate=rate,
                channels=1,
                dtype="int16",
                device=device,
                latency="low",
                callback=self._callback,
            )
            self._latency_s = float(self._stream.latency)
            self._stream.start()
        except sd.PortAudioError as exc:
            raise SpeakerError(
                f"cannot open audio output {device or '(default)'}: {exc}; "
                "set SPEAKER_DEVICE or use SPEAKER_SINK=wav"
            ) from None

    def _callback(self, outdata, frames, time_info, _status) -> None:  # type: ignore[no-untyped-def]
        out = outdata[:, 0]
        filled = 0
        dac = float(getattr(time_info, "outputBufferDacTime", 0.0) or 0.0)
        if not dac:  # the host API gives no times: nominal latency on our own clock
            self._host_times = False
            dac = time.monotonic() + self._latency_s
        with self._lock:
            first = self._consumed
            while filled < frames and self._chunks:
                head = self._chunks[0]
                take = min(frames - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[take:]
            self._consumed += filled
            if filled:
                self._spans.append((dac, first, filled))
        out[filled:] = 0  # underrun: silence

    def _now(self) -> float:
        return float(self._stream.time) if self._host_times else time.monotonic()

    def write(self, pcm: bytes) -> None:
        a = np.frombuffer(pcm, dtype="<i2")
        with self._lock:
            if self._halted is None:
                self._chunks.append(a)
                self._queued += len(a)
                self._pcm += pcm

    def queued(self) -> int:
        return self._queued

    def played(self) -> int:
        if self._halted is not None:
            return self._halted
        now = self._now()
        with self._lock:
            heard = self._heard
            while self._spans:
                dac, first, n = self._spans[0]
                if now < dac:
                    break
                done = min(n, int((now - dac) * self.rate + 1e-6))
                heard = max(heard, first + done)
                if done < n:
                    break
                self._spans.popleft()  # wholly heard
                self._heard = heard
            return heard

    def halt(self) -> int:
        if self._halted is None:
            heard = self.played()
            with self._lock:
                self._chunks.clear()
                self._halted = heard
            self._stream.abort()
        return self._halted

    def close(self) -> str:
        self.halt()
        self._stream.close()
        return ""

    def heard_pcm(self) -> bytes:
        return bytes(self._pcm[: 2 * self.played()])


class DeviceSink:
    kind = "device"

    def __init__(self, device: str | None = None, sd=None) -> None:  # type: ignore[no-untyped-def]
        """`sd`: the sounddevice module (imported here by default; tests pass a fake
        PortAudio with the same interface)."""
        if sd is None:
            try:
                import sounddevice as sd  # PortAudio: imported only when a device is asked for
            except (ImportError, OSError) as exc:
                raise SpeakerError(
                    f"SPEAKER_SINK=device needs sounddevice and libportaudio2 ({exc}): "
                    "`pip install sounddevice` and `apt-get install libportaudio2`, "
                    "or use SPEAKER_SINK=wav"
                ) from None
        self.sd = sd
        self.device: str | int | None = int(device) if device and device.isdigit() else device
        try:
            sd.query_devices(self.device, kind="output")
        except (sd.PortAudioError, ValueError) as exc:
            raise SpeakerError(
                f"no audio output device {self.device or '(default)'} ({exc}); "
                "set SPEAKER_DEVICE (see `python -m sounddevice`) or use SPEAKER_SINK=wav"
            ) from None

    def open(self, rate: int, conversation_id: str, utterance_id: str) -> DeviceOutput:
        return DeviceOutput(self.sd, rate, self.device)
