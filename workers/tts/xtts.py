"""XTTS v2 through coqui-tts: voice cloning with cached speaker latents, streamed synthesis.

torch and TTS are imported only in `load()`; everything before the model (locating the
weights, checking and normalising the reference recording, the on-disk latent cache) runs
without them, so it is testable on machines that will never hold the weights.

XTTS v2's weights are under the Coqui Public Model License (non-commercial use).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.runtime.audio import AudioFileError, float_to_pcm16, read_audio, write_wav
from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError
from workers.tts.config import TtsSettings

XTTS_RATE = 24_000
"""XTTS v2 output rate, Hertz."""
REFERENCE_RATE = 22_050
"""Rate XTTS loads reference audio at (get_conditioning_latents' load_sr)."""
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
MIN_REFERENCE_S = 3.0
MAX_REFERENCE_S = 30.0
INSTALL_HINT = (
    "install it with `pip install torch==2.13.0 && pip install 'coqui-tts>=0.24,<0.28'` "
    "(torch first, pinned, or pip fetches a multi-GB CUDA build)"
)


class XttsError(RuntimeError):
    """XTTS cannot run as configured; the message says what to do."""


def manager_model_dir(model_name: str) -> Path:
    """Where Coqui's model manager keeps `model_name` (mirrors TTS.utils.generic_utils)."""
    if os.environ.get("TTS_HOME"):
        root = Path(os.environ["TTS_HOME"]).expanduser()
    elif os.environ.get("XDG_DATA_HOME"):
        root = Path(os.environ["XDG_DATA_HOME"]).expanduser()
    else:
        root = Path.home() / ".local" / "share"
    return root / "tts" / model_name.replace("/", "--")


def check_model_dir(folder: Path) -> Path:
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"XTTS weights not found in {folder} (missing {', '.join(missing)}): download "
            "XTTS v2 (https://huggingface.co/coqui/XTTS-v2: config.json, model.pth, vocab.json) "
            "into that folder or set TTS_XTTS_MODEL_DIR"
        )
    return folder


def locate_model(tts: TtsSettings, download: Callable[[str], Path] | None = None) -> Path:
    """The folder holding the weights: TTS_XTTS_MODEL_DIR, else the model manager's copy.

    `download` (the model manager) is tried only when no local copy exists; it needs the
    internet and the CPML licence accepted (COQUI_TOS_AGREED=1).
    """
    if tts.xtts_model_dir is not None:
        return check_model_dir(Path(tts.xtts_model_dir).expanduser())
    folder = manager_model_dir(tts.xtts_model_name)
    if all((folder / f).is_file() for f in REQUIRED_FILES) or download is None:
        return check_model_dir(folder)
    try:
        return check_model_dir(download(tts.xtts_model_name))
    except ModelNotFoundError:
        raise
    except ImportError:
        raise ModelNotFoundError(
            f"XTTS weights not found in {folder} and coqui-tts (its model manager) is not "
            f"installed: set TTS_XTTS_MODEL_DIR to a folder with {', '.join(REQUIRED_FILES)}, "
            f"or {INSTALL_HINT}"
        ) from None
    except Exception as exc:
        raise ModelNotFoundError(
            f"XTTS weights not found in {folder} and the model manager could not fetch "
            f"{tts.xtts_model_name} ({exc.__class__.__name__}: {exc}); download them or set "
            "TTS_XTTS_MODEL_DIR"
        ) from None


def model_identity(folder: Path) -> str:
    """Cheap fingerprint of the weights: latents computed by other weights are not reused."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    st = (folder / "model.pth").stat()
    h.update(f"{st.st_size}".encode())
    return h.hexdigest()[:16]


def resolve_device(requested: str, cuda_available: bool, mps_available: bool) -> str:
    if requested == "auto":
        return "cuda" if cuda_available else "mps" if mps_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise XttsError("TTS_DEVICE=cuda but torch sees no CUDA GPU; use TTS_DEVICE=auto or cpu")
    if requested == "mps" and not mps_available:
        raise XttsError("TTS_DEVICE=mps but torch has no MPS backend here; use auto or cpu")
    return requested


def load_reference(path: Path | None) -> np.ndarray:
    """The reference recording as mono int16 at 22.05 kHz, checked and peak-normalised."""
    if path is None:
        raise XttsError(
            "XTTS needs a reference recording of the voice: set TTS_SPEAKER_WAV to a WAV "
            f"with {MIN_REFERENCE_S:.0f}-{MAX_REFERENCE_S:.0f} s of clean speech"
        )
    try:
        pcm = read_audio(path, rate=REFERENCE_RATE)
    except AudioFileError as exc:
        raise XttsError(f"TTS_SPEAKER_WAV: {exc}") from None
    seconds = len(pcm) / REFERENCE_RATE
    if seconds < MIN_REFERENCE_S:
        raise XttsError(
            f"TTS_SPEAKER_WAV {path}: {seconds:.1f} s of audio; XTTS needs at least "
            f"{MIN_REFERENCE_S:.0f} s of speech to clone a voice"
        )
    # XTTS reads at most 30 s; cutting here keeps the cache key independent of the tail.
    pcm = pcm[: int(MAX_REFERENCE_S * REFERENCE_RATE)]
    x = pcm.astype(np.float32) / 32768.0
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(x**2)))
    if peak < 1e-3 or rms < 1e-4:
        raise XttsError(f"TTS_SPEAKER_WAV {path}: the recording is silent")
    return float_to_pcm16(x * (0.75 / peak))


@dataclass(frozen=True)
class Latents:
    """XTTS speaker conditioning, as numpy so the cache needs no torch."""

    gpt_cond_latent: np.ndarray
    speaker_embedding: np.ndarray
    key: str
    cached: bool


ComputeLatents = Callable[[Path], tuple[np.ndarray, np.ndarray]]
"""Reference WAV path -> (gpt_cond_latent, speaker_embedding); the model's job."""


class LatentCache:
    """Speaker latents on disk, keyed by the reference audio and the model: computed once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(reference: np.ndarray, model_id: str) -> str:
        h = hashlib.sha256(np.ascontiguousarray(reference, dtype="<i2").tobytes())
        h.update(model_id.encode())
        return h.hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> Latents | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p) as data:
                gpt, spk = data["gpt_cond_latent"], data["speaker_embedding"]
        except (OSError, KeyError, ValueError):
            return None  # a torn or foreign file: recompute and overwrite
        return Latents(gpt, spk, key, cached=True)

    def get_or_compute(
        self, reference: np.ndarray, model_id: str, compute: ComputeLatents
    ) -> Latents:
        key = self.key(reference, model_id)
        hit = self.load(key)
        if hit is not None:
            return hit
        self.folder.mkdir(parents=True, exist_ok=True)
        # XTTS reads references from files: hand it the normalised one, not the original.
        wav = write_wav(self.folder / f"{key}.reference.wav", reference.tobytes(), REFERENCE_RATE)
        gpt, spk = compute(wav)
        gpt, spk = np.asarray(gpt, dtype=np.float32), np.asarray(spk, dtype=np.float32)
        tmp = self.folder / f"{key}.tmp.npz"
        np.savez(tmp, gpt_cond_latent=gpt, speaker_embedding=spk)
        os.replace(tmp, self.path(key))  # atomic: a crash never leaves half a cache entry
        (self.folder / f"{key}.json").write_text(
            json.dumps({"model": model_id, "computed_at": time.time()})
        )
        return Latents(gpt, spk, key, cached=False)


class XttsBackend:
    """XTTS v2: GPT + HiFi-GAN, `inference_stream` yields audio every few GPT tokens."""

    sample_rate = XTTS_RATE

    def __init__(self, tts: TtsSettings, settings: Settings) -> None:
        self.tts = tts
        self.name = "xtts:v2"
        self.cache = LatentCache(tts.latent_cache_dir or settings.data_dir / "xtts-latents")
        self.latents: Latents | None = None
        self.device = ""
        self._model = None
        self._torch = None

    def load(self) -> None:
        reference = load_reference(self.tts.speaker_wav)
        folder = locate_model(self.tts, download=_manager_download)
        try:
            import torch
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise XttsError(
                f"TTS_BACKEND=xtts needs coqui-tts ({exc.name} missing): {INSTALL_HINT}"
            ) from None
        mps = getattr(torch.backends, "mps", None)
        self.device = resolve_device(
            self.tts.device, torch.cuda.is_available(), bool(mps and mps.is_available())
        )
        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        model = Xtts.init_from_config(config)
        model.load_checkpoint(config, checkpoint_dir=str(folder), use_deepspeed=False)
        model.to(self.device)
        model.eval()
        self._model, self._torch = model, torch

        def compute(wav: Path) -> tuple[np.ndarray, np.ndarray]:
            gpt, spk = model.get_conditioning_latents(audio_path=[str(wav)])
            return gpt.cpu().numpy(), spk.cpu().numpy()

        self.latents = self.cache.get_or_compute(reference, model_identity(folder), compute)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        if self._model is None or self.latents is None or self._torch is None:
            raise RuntimeError("XttsBackend.synthesize before load()")
        torch = self._torch
        gpt = torch.from_numpy(self.latents.gpt_cond_latent)
        spk = torch.from_numpy(self.latents.speaker_embedding)
        for chunk in self._model.inference_stream(
            text,
            self.tts.language,
            gpt,
            spk,
            stream_chunk_size=self.tts.xtts_stream_chunk_size,
            enable_text_splitting=False,
        ):
            yield float_to_pcm16(chunk.detach().cpu().numpy().reshape(-1))


def _manager_download(model_name: str) -> Path:
    from TTS.utils.manage import ModelManager

    model_path, _config, _item = ModelManager().download_model(model_name)
    return Path(model_path)
