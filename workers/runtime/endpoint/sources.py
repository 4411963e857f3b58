"""Audio sources behind one interface: async blocks of 16 kHz mono int16.

`FileSource` streams a WAV (any format `read_audio` takes) in real time or as fast as
possible; `MicSource` reads a PortAudio input through `sounddevice`, imported lazily so
everything else runs without PortAudio.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import numpy as np

from workers.runtime.audio import AudioFileError, float_to_pcm16, pcm16_to_float, read_audio

RATE = 16_000


class AudioSourceError(RuntimeError):
    """A source that cannot deliver audio; the message says what is wrong."""


class AudioSource(Protocol):
    name: str
    """Shown in mic.voice-started `source`."""

    def blocks(self) -> AsyncIterator[np.ndarray]:
        """int16 blocks at 16 kHz mono until the source ends (files) or is closed."""
        ...


class Pacer:
    """Real-time pace for one continuous stream of samples, and when each block was captured.

    The schedule is absolute (no drift), and `captured_at` (wall clock, the last sample of the
    block just paced) comes from it, not from when the loop got there: as a device's ADC clock
    dates its blocks, a process that stalls catches up with a burst of blocks dated where they
    belong. Dated by arrival instead, the timeline jumps, and the simulated room's echo no
    longer matches the reference the canceller reads for the same block: the reply leaks
    through as a voice onset.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._wall0 = time.time()
        self.sent = 0
        self.captured_at: float | None = None

    async def wait(self, n: int) -> None:
        """Until the next `n` samples have been captured."""
        self.sent += n
        delay = self._t0 + self.sent / RATE - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.captured_at = self._wall0 + self.sent / RATE


class FileSource:
    def __init__(
        self,
        path: str | Path | None = None,
        *,
        audio: np.ndarray | None = None,
        name: str = "",
        realtime: bool = True,
        block_ms: int = 20,
        tail_silence_ms: int = 0,
    ) -> None:
        if audio is None:
            if path is None:
                raise AudioSourceError("FileSource needs a path or audio")
            try:
                audio = read_audio(path, RATE)
            except AudioFileError as exc:
                raise AudioSourceError(str(exc)) from None
        tail = np.zeros(RATE * tail_silence_ms // 1000, dtype=np.int16)
        self.audio = np.concatenate([np.asarray(audio, dtype=np.int16), tail])
        self.name = (name or (Path(path).name if path else "array"))[:256]
        self.realtime = realtime
        self.block = RATE * block_ms // 1000
        self.captured_at: float | None = None
        """Real time only: see `Pacer` (as fast as possible, blocks are dated on arrival)."""

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.audio) / RATE

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        pacer = Pacer() if self.realtime else None
        for i in range(0, len(self.audio), self.block):
            end = min(len(self.audio), i + self.block)
            if pacer is not None:
                # A microphone delivers a block once its last sample is captured, so a file
                # does too (a block handed over at its first sample would make every
                # latency look one block shorter).
                await pacer.wait(end - i)
                self.captured_at = pacer.captured_at
            else:
                await asyncio.sleep(0)
            yield self.audio[i:end]


class MicSource:
    """A live PortAudio input. Opens at 16 kHz, or at the device's rate and resamples.

    `captured_at` is the wall-clock time the last sample of the block just yielded hit the
    ADC, from PortAudio's `inputBufferAdcTime` (not when the block reached Python), so the
    end of speech is dated by the device clock."""

    def __init__(self, device: str | int | None = None, block_ms: int = 20, sd=None) -> None:  # type: ignore[no-untyped-def]
        """`sd`: the sounddevice module (imported by default; tests pass a fake PortAudio)."""
        self.sd = sd if sd is not None else _import_sounddevice()
        self.captured_at: float | None = None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device = device if device != "" else None
        try:
            info = self.sd.query_devices(self.device, "input")
        except (ValueError, self.sd.PortAudioError) as exc:
            which = "no default input device" if self.device is None else f"no input {device!r}"
            raise AudioSourceError(
                f"{which} ({exc}); list devices with `python -m sounddevice`, set MIC_DEVICE"
            ) from None
        self.name = f"mic:{info['name']}"[:256]
        self.rate = RATE
        try:
            self.sd.check_input_settings(self.device, channels=1, dtype="int16", samplerate=RATE)
        except (ValueError, self.sd.PortAudioError):
            self.rate = int(info["default_samplerate"])
            try:
                self.sd.check_input_settings(
                    self.device, channels=1, dtype="int16", samplerate=self.rate
                )
            except (ValueError, self.sd.PortAudioError) as exc:
                raise AudioSourceError(
                    f"input device {info['name']!r} rejects 16 kHz and {self.rate} Hz mono "
                    f"int16 ({exc})"
                ) from None
        self.blocksize = self.rate * block_ms // 1000

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue(maxsize=500)
        rate = self.rate

        def callback(indata, frames, time_info, status) -> None:  # type: ignore[no-untyped-def]
            # PortAudio thread: hand the block over, never block here. How long ago its
            # last sample hit the ADC, on the stream clock, dates it on the wall clock.
            now = time.time()
            adc = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
            current = float(getattr(time_info, "currentTime", 0.0) or 0.0)
            ago = current - (adc + (frames - 1) / rate) if adc and current else 0.0
            loop.call_soon_threadsafe(_put, queue, (bytes(indata), now - max(0.0, ago)))

        try:
            stream = self.sd.RawInputStream(
                device=self.device,
                samplerate=self.rate,
                channels=1,
                dtype="int16",
                blocksize=self.blocksize,
                callback=callback,
            )
            stream.start()
        except (ValueError, self.sd.PortAudioError) as exc:
            raise AudioSourceError(f"cannot open input {self.name!r}: {exc}") from None
        resampler = None
        if self.rate != RATE:
            import soxr

            # A stream resampler: per-block resampling would click at every block edge.
            resampler = soxr.ResampleStream(self.rate, RATE, 1, dtype="float32")
        try:
            while True:
                pcm, self.captured_at = await queue.get()
                if resampler is None:
                    yield np.frombuffer(pcm, dtype="<i2")
                else:
                    x = resampler.resample_chunk(pcm16_to_float(pcm))
                    yield float_to_pcm16(x)
        finally:
            with contextlib.suppress(Exception):
                stream.stop()
                stream.close()


def _put(queue: asyncio.Queue[tuple[bytes, float]], block: tuple[bytes, float]) -> None:
    if queue.full():
        queue.get_nowait()  # consumer stalled: drop the oldest rather than grow
    queue.put_nowait(block)


def _import_sounddevice():  # type: ignore[no-untyped-def]
    try:
        import sounddevice
    except ImportError:
        raise AudioSourceError(
            "live microphone needs sounddevice: `pip install sounddevice`"
        ) from None
    except OSError as exc:
        raise AudioSourceError(
            f"PortAudio not found ({exc}): `apt-get install libportaudio2`"
        ) from None
    return sounddevice
