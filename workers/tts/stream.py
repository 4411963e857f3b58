"""Cutting synthesized audio into fixed-size chunks at the pipeline's output rate."""

from __future__ import annotations

import numpy as np


class Rechunker:
    """Turns pieces of any length (one per sentence or clause, or XTTS' token chunks) into
    chunks of `chunk_samples` at `out_rate`, resampling with state kept across pieces so a
    sentence has no seams."""

    def __init__(self, in_rate: int, out_rate: int, chunk_samples: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.chunk_samples = max(1, chunk_samples)
        self._buf = np.zeros(0, dtype="<i2")
        self._resampler = None
        if in_rate != out_rate:
            import soxr

            self._resampler = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")

    def push(self, pcm: np.ndarray, last: bool = False) -> list[np.ndarray]:
        """Add audio; returns the complete chunks (and the remainder too when `last`)."""
        pcm = np.asarray(pcm, dtype="<i2").reshape(-1)
        if self._resampler is not None:
            y = self._resampler.resample_chunk(pcm.astype(np.float32) / 32768.0, last=last)
            y = np.nan_to_num(y, nan=0.0)
            pcm = (np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2")
        self._buf = np.concatenate([self._buf, pcm]) if len(self._buf) else pcm
        n = self.chunk_samples
        full = len(self._buf) // n
        chunks = [self._buf[i * n : (i + 1) * n] for i in range(full)]
        self._buf = self._buf[full * n :]
        if last and len(self._buf):
            chunks.append(self._buf)
            self._buf = np.zeros(0, dtype="<i2")
        return chunks

    def flush(self) -> list[np.ndarray]:
        return self.push(np.zeros(0, dtype="<i2"), last=True)
