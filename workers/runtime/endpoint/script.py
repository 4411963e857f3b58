"""A scripted microphone for the simulated room: files spoken in turns, as a person would.

`ScriptSource` is one continuous 16 kHz stream (the microphone never closes between turns):
the first file, then for each next item, silence until its cue, then the file.
An item is `FILE` (spoken once the assistant's reply has ended: its reference was heard and
has been quiet for a second) or `FILE@S` (spoken over the reply, S seconds after it started
playing: a barge-in). After the last file the stream runs until the reply has ended too.
Cues come from the speaker's reference (`ReferenceBuffer`), so a reply that never comes
ends the wait after `max_wait_s`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.runtime.audio import AudioFileError, read_audio
from workers.runtime.endpoint.reference import ReferenceBuffer
from workers.runtime.endpoint.sources import AudioSourceError, Pacer
from workers.runtime.endpoint.vad import RATE

#: Quiet after a reply before the next line is spoken.
IDLE_S = 1.0


@dataclass(frozen=True)
class Line:
    path: Path
    over_s: float | None = None
    """Spoken this long after the reply started playing (None: after it ended)."""

    @classmethod
    def parse(cls, spec: str) -> Line:
        path, at, over = spec.rpartition("@") if "@" in spec else (spec, "", "")
        if not at:
            return cls(Path(spec))
        try:
            return cls(Path(path), float(over))
        except ValueError:
            raise AudioSourceError(f"{spec!r}: want FILE or FILE@SECONDS") from None


class ScriptSource:
    def __init__(
        self,
        lines: list[str],
        buffer: ReferenceBuffer,
        block_ms: int = 20,
        tail_silence_ms: int = 1000,
        max_wait_s: float = 60.0,
    ) -> None:
        self.lines = [Line.parse(s) for s in lines]
        self.audio = []
        for line in self.lines:
            try:
                self.audio.append(read_audio(line.path, RATE))
            except AudioFileError as exc:
                raise AudioSourceError(str(exc)) from None
        self.buffer = buffer
        self.block = RATE * block_ms // 1000
        self.tail = tail_silence_ms / 1000
        self.max_wait_s = max_wait_s
        self.captured_at: float | None = None
        """When the last sample of the block just yielded was spoken (see `Pacer`)."""
        self.name = f"script:{self.lines[0].path.name}+{len(self.lines) - 1}"[:256]

    def _reply_since(self, t: float) -> float | None:
        """When the first reply that started playing after `t` started (None: none yet)."""
        i = ReferenceBuffer.index(t)
        starts = [s for s in self.buffer.history if s >= i]
        return min(starts) / RATE if starts else None

    def _cue(self, line: Line | None, spoken: tuple[float, float], now: float) -> bool:
        # The reply to a line starts after the line began: a fast one can start while the
        # line's own trailing silence is still being fed, and is still its answer.
        spoken_start, spoken_end = spoken
        started = self._reply_since(spoken_start)
        if now - spoken_end > self.max_wait_s:
            return True
        if started is None:
            return False
        if line is not None and line.over_s is not None:
            return now >= started + line.over_s
        return now - self.buffer.last_heard / RATE >= IDLE_S and now > started

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        pacer = Pacer()
        silence = np.zeros(self.block, dtype=np.int16)

        async def paced(a: np.ndarray) -> AsyncIterator[np.ndarray]:
            for i in range(0, len(a), self.block):
                chunk = a[i : i + self.block]
                await pacer.wait(len(chunk))
                self.captured_at = pacer.captured_at
                yield chunk

        for k, audio in enumerate(self.audio):
            spoken_start = time.time()
            async for b in paced(audio):
                yield b
            spoken = (spoken_start, time.time())
            nxt = self.lines[k + 1] if k + 1 < len(self.lines) else None
            while not self._cue(nxt, spoken, time.time()):
                async for b in paced(silence):
                    yield b
        async for b in paced(np.zeros(round(self.tail * RATE), dtype=np.int16)):
            yield b
