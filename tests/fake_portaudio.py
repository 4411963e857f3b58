"""A clocked stand-in for `sounddevice` (PortAudio): there is no sound card on this machine.

Only the sound card is faked. Everything the code under test sees goes through the same
calls as with `import sounddevice as sd`: `OutputStream` / `RawInputStream` / `InputStream`
with a callback, `blocksize`, `latency`, `time`, `start` / `stop` / `abort` / `close`,
`query_devices`, `check_input_settings` and `PortAudioError`.

Like a real device, and unlike a fake that answers at once:
- the callbacks run on their own thread, one block every `blocksize / samplerate` seconds of
  a real-time clock (an absolute schedule, so no drift), never when the caller asks;
- an output block handed over at stream time t reaches the DAC at t + `output_latency`
  (the callback's `time.outputBufferDacTime` says so, as PortAudio's does), and sample i of
  it at that plus i / samplerate; `abort()` drops whatever has not reached the DAC yet,
  `stop()` lets it play out;
- an input block is delivered once its last sample is captured, its first sample having hit
  the ADC `input_latency` earlier (`time.inputBufferAdcTime`).

What the DAC really emitted is kept per output stream (`FakeStream.emitted()`), so a test can
compare what the code claims was heard with what was.

    sd = FakePortAudio(output_latency=0.06, blocksize=512, input_audio=pcm16_at_16k)
    sink = DeviceSink(sd=sd)                 # the speaker's device sink
    source = MicSource(sd=sd)                # the mic's device source

A room that feeds the speaker's output back into the microphone passes `room=`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np


class PortAudioError(Exception):
    """As `sounddevice.PortAudioError`."""


@dataclass
class _Flags:
    """As `sounddevice.CallbackFlags` (nothing ever goes wrong on this clock)."""

    input_underflow: bool = False
    input_overflow: bool = False
    output_underflow: bool = False
    output_overflow: bool = False
    priming_output: bool = False

    def __bool__(self) -> bool:
        return False


class FakeStream:
    """One PortAudio stream on the fake's clock."""

    def __init__(
        self,
        pa: FakePortAudio,
        kind: str,
        *,
        samplerate: float,
        channels: int = 1,
        dtype: str = "int16",
        blocksize: int | None = None,
        callback: Any = None,
        raw: bool = False,
        device: Any = None,
        latency: Any = None,
        **_ignored: Any,
    ) -> None:
        if pa.fail_open:
            raise PortAudioError(pa.fail_open)
        if dtype != "int16" or channels != 1:
            raise PortAudioError(f"fake device plays int16 mono only, not {dtype} x{channels}")
        if callback is None:
            raise PortAudioError("the fake only runs callback streams")
        self.pa = pa
        self.kind = kind
        self.samplerate = float(samplerate)
        self.rate = int(samplerate)
        self.blocksize = int(blocksize or pa.blocksize)
        self.callback = callback
        self.raw = raw
        self.device = device
        self.latency = pa.output_latency if kind == "output" else pa.input_latency
        """Seconds, as `Stream.latency`."""
        self.active = False
        self.closed = False
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._blocks: list[tuple[float, np.ndarray]] = []
        """Output: (DAC time of the first sample, samples) of every block handed over."""
        self._cut: float | None = None
        """Output: stream time of abort(); nothing after it reached the DAC."""
        self._in_pos = 0
        self.callbacks = 0
        pa.streams.append(self)

    @property
    def time(self) -> float:
        """Stream time, seconds (as `Pa_GetStreamTime`)."""
        return self.pa.clock()

    def start(self) -> None:
        if self.closed:
            raise PortAudioError("stream is closed")
        if self.active:
            return
        self.active = True
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.blocksize / self.samplerate
        t0 = self.pa.clock()
        k = 0
        while not self._halt.is_set():
            # Absolute schedule: block k is handed over at t0 + k * period.
            due = t0 + k * period
            wait = due - self.pa.clock()
            if wait > 0 and self._halt.wait(wait):
                break
            now = self.pa.clock()
            if self.kind == "output":
                self._output_block(now)
            else:
                self._input_block(now)
            k += 1

    def _output_block(self, now: float) -> None:
        out = np.zeros((self.blocksize, 1), dtype=np.int16)
        info = SimpleNamespace(
            currentTime=now, outputBufferDacTime=now + self.latency, inputBufferAdcTime=0.0
        )
        self.callback(out, self.blocksize, info, _Flags())
        self.callbacks += 1
        with self._lock:
            self._blocks.append((now + self.latency, out[:, 0].copy()))

    def _input_block(self, now: float) -> None:
        # The block's last sample was captured now; its first one blocksize samples ago,
        # and PortAudio reports when it hit the ADC (input latency earlier still).
        block = self.pa.input_block(self._in_pos, self.blocksize, self.rate)
        self._in_pos += self.blocksize
        first_at = now - (self.blocksize - 1) / self.samplerate
        info = SimpleNamespace(
            currentTime=now,
            inputBufferAdcTime=first_at - self.latency,
            outputBufferDacTime=0.0,
        )
        data: Any = block.tobytes() if self.raw else block.reshape(-1, 1)
        self.callback(data, self.blocksize, info, _Flags())
        self.callbacks += 1

    def _join(self) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None
        self.active = False

    def stop(self) -> None:
        """Stop handing over blocks; what was handed over still plays."""
        self._join()

    def abort(self) -> None:
        """Stop at once: what has not reached the DAC is dropped."""
        with self._lock:
            if self._cut is None:
                self._cut = self.pa.clock()
        self._join()

    def close(self) -> None:
        if self.active:
            self.abort()
        self.closed = True

    def emitted(self, until: float | None = None) -> np.ndarray:
        """The samples the DAC has emitted by stream time `until` (default: now)."""
        now = self.pa.clock() if until is None else until
        with self._lock:
            end = now if self._cut is None else min(now, self._cut)
            parts = []
            for dac, block in self._blocks:
                n = int(np.clip(np.floor((end - dac) * self.samplerate + 1e-9), 0, len(block)))
                parts.append(block[:n])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def __enter__(self) -> FakeStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakePortAudio:
    """A module-like object with the parts of `sounddevice` the endpoint code uses."""

    PortAudioError = PortAudioError

    def __init__(
        self,
        *,
        output_latency: float = 0.06,
        input_latency: float = 0.02,
        blocksize: int = 512,
        input_audio: np.ndarray | None = None,
        room: Callable[[int, int], np.ndarray] | None = None,
        input_rate: int = 16_000,
        rates: tuple[int, ...] = (16_000, 22_050, 44_100, 48_000),
        name: str = "fake card",
        fail_open: str = "",
    ) -> None:
        self.output_latency = output_latency
        self.input_latency = input_latency
        self.blocksize = blocksize
        self.input_audio = (
            np.zeros(0, dtype=np.int16) if input_audio is None else np.asarray(input_audio)
        )
        self.room = room
        """If set, `room(first_sample, n)` is what the microphone hears (e.g. the user plus
        the echo of what `outputs()` emitted), instead of `input_audio`."""
        self.input_rate = input_rate
        self.rates = rates
        self.name = name
        self.fail_open = fail_open
        """Non-empty: opening a stream raises PortAudioError with this message."""
        self.streams: list[FakeStream] = []
        self.clock = time.monotonic

    # -- streams ---------------------------------------------------------------------

    # sounddevice's names
    def OutputStream(self, **kw: Any) -> FakeStream:
        return FakeStream(self, "output", **kw)

    def InputStream(self, **kw: Any) -> FakeStream:
        return FakeStream(self, "input", **kw)

    def RawInputStream(self, **kw: Any) -> FakeStream:
        return FakeStream(self, "input", raw=True, **kw)

    def outputs(self) -> list[FakeStream]:
        return [s for s in self.streams if s.kind == "output"]

    def input_block(self, pos: int, n: int, rate: int) -> np.ndarray:
        """The room's sound at the microphone: `input_audio`, then silence."""
        if rate != self.input_rate:
            raise PortAudioError(f"fake input runs at {self.input_rate} Hz, not {rate}")
        if self.room is not None:
            return np.asarray(self.room(pos, n), dtype=np.int16)
        block = np.zeros(n, dtype=np.int16)
        part = self.input_audio[pos : pos + n]
        block[: len(part)] = part
        return block

    # -- devices ---------------------------------------------------------------------

    def query_devices(self, device: Any = None, kind: str | None = None) -> dict[str, Any]:
        if device not in (None, "", 0, self.name):
            raise ValueError(f"No device matching {device!r}")
        return {
            "name": self.name,
            "max_input_channels": 1,
            "max_output_channels": 1,
            "default_samplerate": float(self.input_rate),
            "default_low_output_latency": self.output_latency,
            "default_low_input_latency": self.input_latency,
        }

    def check_input_settings(
        self, device: Any = None, channels: int = 1, dtype: str = "int16", samplerate: float = 0
    ) -> None:
        self.query_devices(device, "input")
        if int(samplerate) != self.input_rate:
            raise PortAudioError(f"Invalid sample rate {samplerate}")

    def check_output_settings(
        self, device: Any = None, channels: int = 1, dtype: str = "int16", samplerate: float = 0
    ) -> None:
        self.query_devices(device, "output")
        if int(samplerate) not in self.rates:
            raise PortAudioError(f"Invalid sample rate {samplerate}")
