"""Voice-activity detectors: speech probability per fixed-size frame of 16 kHz int16.

Silero runs its ONNX model (shipped by the `silero-vad` wheel) on onnxruntime directly: the
package itself imports torch. WebRTC VAD (`webrtcvad-wheels`) is imported lazily.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

RATE = 16_000


class VadError(RuntimeError):
    """A VAD that cannot be used; the message says what to install or set."""


class Vad(Protocol):
    name: str
    frame_samples: int
    """Samples per frame `prob` takes."""

    def prob(self, frame: np.ndarray) -> float:
        """Speech probability of one int16 frame, 0..1."""
        ...

    def reset(self) -> None: ...


class SileroVad:
    """Silero VAD v5/v6: 512-sample frames (32 ms) with 64 samples of context and an RNN state."""

    name = "silero"
    frame_samples = 512
    _context_samples = 64

    def __init__(self) -> None:
        import onnxruntime as ort

        from workers.runtime.models import bundled_path

        path = bundled_path("silero-vad", "silero_vad/data/silero_vad.onnx", hint="Silero VAD")
        opts = ort.SessionOptions()
        # One frame is ~0.1 ms of work: threads only add wake-up latency.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self._context_samples), dtype=np.float32)

    def prob(self, frame: np.ndarray) -> float:
        x = (frame.astype(np.float32) / 32768.0).reshape(1, -1)
        x = np.concatenate([self._context, x], axis=1)
        out, self._state = self._session.run(
            None, {"input": x, "state": self._state, "sr": self._sr}
        )
        self._context = x[:, -self._context_samples :]
        return float(out[0, 0])


class WebRtcVad:
    """Google's WebRTC VAD (GMM): a yes/no per 30 ms frame."""

    name = "webrtc"
    frame_samples = 480

    def __init__(self, mode: int = 3) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise VadError(
                "MIC_VAD=webrtc needs webrtcvad: `pip install webrtcvad-wheels`"
            ) from None
        if mode not in (0, 1, 2, 3):
            raise VadError(f"MIC_WEBRTC_MODE={mode}: want 0-3")
        self._vad = webrtcvad.Vad(mode)

    def reset(self) -> None:
        pass

    def prob(self, frame: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(frame.astype("<i2").tobytes(), RATE) else 0.0


def make_vad(name: str, webrtc_mode: int = 3) -> Vad:
    if name == "silero":
        return SileroVad()
    if name == "webrtc":
        return WebRtcVad(webrtc_mode)
    raise VadError(f"MIC_VAD={name}: want silero or webrtc")
