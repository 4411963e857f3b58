"""XTTS v2 through coqui-tts: voice cloning with cached speaker latents, streamed synthesis.

torch and TTS are imported only in `load()`; everything before the model (locating the
weights, reading their config.json, checking and normalising the reference recording, the
on-disk latent cache, fitting text to XTTS's per-language character limits) runs without
them. The latents are computed from the reference as a PCM tensor (`get_speaker_embedding`
and `get_gpt_cond_latents` with the model's `gpt_cond_len`, `gpt_cond_chunk_len` and
`max_ref_len`), so no audio file goes through torchaudio/torchcodec.

XTTS v2's weights are under the Coqui Public Model License (non-commercial use).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.runtime.audio import AudioFileError, float_to_pcm16, read_audio
from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError
from workers.tts.config import TtsSettings

log = logging.getLogger("voicebus.tts")

XTTS_RATE = 24_000
"""XTTS v2 output rate, Hertz."""
REFERENCE_RATE = 22_050
"""Rate XTTS computes its conditioning at (get_conditioning_latents' load_sr), Hertz."""
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
MIN_REFERENCE_S = 3.0
DEFAULT_CHAR_LIMIT = 250
"""coqui's limit for a language missing from its table (the English one)."""
INSTALL_HINT = (
    "install it with `sh ops/install.sh --xtts` (CPU: torch 2.13.0, coqui-tts 0.28, "
    "transformers <5.24; see the README's XTTS section for a GPU)"
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
            "XTTS v2 (https://huggingface.co/coqui/XTTS-v2: config.json, model.pth, vocab.json, "
            "speakers_xtts.pth) into that folder or set TTS_XTTS_MODEL_DIR"
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
    except ImportError as exc:
        raise ModelNotFoundError(
            f"XTTS weights not found in {folder} and coqui-tts (its model manager) cannot be "
            f"imported ({import_problem(exc)}): set TTS_XTTS_MODEL_DIR to a folder with "
            f"{', '.join(REQUIRED_FILES)}, or {INSTALL_HINT}"
        ) from exc
    except Exception as exc:
        raise ModelNotFoundError(
            f"XTTS weights not found in {folder} and the model manager could not fetch "
            f"{tts.xtts_model_name} ({exc.__class__.__name__}: {exc}); download them or set "
            "TTS_XTTS_MODEL_DIR"
        ) from None


def import_problem(exc: ImportError) -> str:
    """One line on why an import failed: the missing module, else the package's own words
    (coqui-tts raises ImportError with a paragraph and no module name when torch, torchaudio
    or torchcodec is absent)."""
    if exc.name:
        return f"{exc.name} missing"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] or exc.__class__.__name__


def model_identity(folder: Path) -> str:
    """Cheap fingerprint of the weights and their settings: latents computed by other
    weights, or with other reference lengths, are not reused."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    st = (folder / "model.pth").stat()
    h.update(f"{st.st_size}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class XttsOptions:
    """What voicebus reads from the weights' config.json (plain JSON: no torch needed)."""

    languages: tuple[str, ...]
    gpt_cond_len: int
    """Seconds of the reference the GPT conditioning uses."""
    gpt_cond_chunk_len: int
    """Seconds per chunk the conditioning averages over."""
    max_ref_len: int
    """Seconds of the reference read at most."""
    temperature: float
    length_penalty: float
    repetition_penalty: float
    top_k: int
    top_p: float

    @classmethod
    def read(cls, folder: Path) -> XttsOptions:
        path = folder / "config.json"
        try:
            c = json.loads(path.read_text())
            return cls(
                languages=tuple(c.get("languages") or ("en",)),
                gpt_cond_len=int(c.get("gpt_cond_len", 30)),
                gpt_cond_chunk_len=int(c.get("gpt_cond_chunk_len", 4)),
                max_ref_len=int(c.get("max_ref_len", 30)),
                temperature=float(c.get("temperature", 0.75)),
                length_penalty=float(c.get("length_penalty", 1.0)),
                repetition_penalty=float(c.get("repetition_penalty", 5.0)),
                top_k=int(c.get("top_k", 50)),
                top_p=float(c.get("top_p", 0.85)),
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise XttsError(f"{path}: not an XTTS config ({exc})") from None


def xtts_language(code: str, supported: tuple[str, ...]) -> str | None:
    """XTTS's code for a language as Whisper or a user spells it ("zh" -> "zh-cn",
    "en-US" -> "en"), or None when the model does not speak it."""
    code = code.strip().lower().replace("_", "-")
    if not code:
        return None
    if code in supported:
        return code
    base = code.split("-")[0]
    if base == "zh" and "zh-cn" in supported:
        return "zh-cn"
    return base if base in supported else None


_CLAUSE_BREAK = re.compile(r"(?<=[,;:.!?\u2014\u3001\u3002\uff0c\uff1f\uff01])\s*")


def fit_char_limit(text: str, limit: int) -> list[str]:
    """Cut `text` into pieces of at most `limit` characters, at clause boundaries first, then
    between words (a word longer than the limit is cut). XTTS warns and may truncate the audio
    of longer input (coqui's tokenizer `char_limits`: 250 for English, 71 for Japanese)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return [text] if text else []
    pieces: list[str] = []
    current = ""
    for clause in (c for c in _CLAUSE_BREAK.split(text) if c):
        for part in _words_within(clause.strip(), limit):
            joined = f"{current} {part}" if current else part
            if len(joined) <= limit:
                current = joined
            else:
                if current:
                    pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _words_within(clause: str, limit: int) -> list[str]:
    if len(clause) <= limit:
        return [clause]
    out: list[str] = []
    current = ""
    words = clause.split(" ") if " " in clause else [clause]
    for word in words:
        while len(word) > limit:  # no space to cut at (CJK, a URL): cut hard
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        joined = f"{current} {word}" if current else word
        if len(joined) <= limit:
            current = joined
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    return out


def resolve_device(requested: str, cuda_available: bool, mps_available: bool) -> str:
    if requested == "auto":
        return "cuda" if cuda_available else "mps" if mps_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise XttsError("TTS_DEVICE=cuda but torch sees no CUDA GPU; use TTS_DEVICE=auto or cpu")
    if requested == "mps" and not mps_available:
        raise XttsError("TTS_DEVICE=mps but torch has no MPS backend here; use auto or cpu")
    return requested


def load_reference(path: Path | None, max_seconds: float = 30.0) -> np.ndarray:
    """The reference recording as mono int16 at 22.05 kHz, checked, cut to `max_seconds`
    (the model's max_ref_len) and peak-normalised to 0.75 (XTTS's sound_norm_refs), so a
    quiet recording clones as well as a loud one."""
    if path is None:
        raise XttsError(
            "XTTS needs a reference recording of the voice: set TTS_SPEAKER_WAV to a WAV "
            f"with {MIN_REFERENCE_S:.0f}-{max_seconds:.0f} s of clean speech"
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
    # XTTS reads at most max_ref_len; cutting here keeps the cache key independent of the tail.
    pcm = pcm[: int(max_seconds * REFERENCE_RATE)]
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


ComputeLatents = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Reference PCM (int16, 22.05 kHz) -> (gpt_cond_latent, speaker_embedding); the model's job."""


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
        gpt, spk = compute(reference)
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
        self.options: XttsOptions | None = None
        self.device = ""
        self.language = ""
        """TTS_LANGUAGE as XTTS spells it: the language of a sentence that names none."""
        self.char_limits: dict[str, int] = {}
        self.load_s = 0.0
        self.latents_s = 0.0
        self._model = None
        self._torch = None
        self._unsupported_warned: set[str] = set()

    def load(self) -> None:
        folder = locate_model(self.tts, download=_manager_download)
        options = XttsOptions.read(folder)
        language = xtts_language(self.tts.language, options.languages)
        if language is None:
            raise XttsError(
                f"TTS_LANGUAGE={self.tts.language}: this XTTS model speaks "
                f"{', '.join(options.languages)}"
            )
        reference = load_reference(self.tts.speaker_wav, options.max_ref_len)
        try:
            import torch
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise XttsError(
                f"TTS_BACKEND=xtts needs coqui-tts ({import_problem(exc)}): {INSTALL_HINT}"
            ) from exc
        mps = getattr(torch.backends, "mps", None)
        self.device = resolve_device(
            self.tts.device, torch.cuda.is_available(), bool(mps and mps.is_available())
        )
        if self.tts.threads:
            torch.set_num_threads(self.tts.threads)
        t0 = time.perf_counter()
        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        model = Xtts(config)  # init_from_config is deprecated in coqui-tts 0.28
        # eval=True puts the GPT (with its inference model, built once here) and the decoder
        # in eval mode; Xtts.eval() would build the GPT inference model a second time.
        model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True, use_deepspeed=False)
        model.train(False)
        model.to(self.device)
        self.load_s = time.perf_counter() - t0
        self._model, self._torch, self.options = model, torch, options
        self.language = language
        self.char_limits = dict(model.tokenizer.char_limits)

        def compute(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            audio = torch.from_numpy(pcm.astype(np.float32) / 32768.0).unsqueeze(0)
            audio = audio.to(self.device)
            spk = model.get_speaker_embedding(audio, REFERENCE_RATE)
            gpt = model.get_gpt_cond_latents(
                audio,
                REFERENCE_RATE,
                length=options.gpt_cond_len,
                chunk_length=options.gpt_cond_chunk_len,
            )
            return gpt.cpu().numpy(), spk.cpu().numpy()

        t0 = time.perf_counter()
        self.latents = self.cache.get_or_compute(reference, model_identity(folder), compute)
        self.latents_s = time.perf_counter() - t0

    def language_for(self, language: str | None) -> str:
        """The XTTS language to speak: the sentence's own if the model has it, else
        TTS_LANGUAGE."""
        if not language:
            return self.language
        assert self.options is not None
        code = xtts_language(language, self.options.languages)
        if code is None:
            if language not in self._unsupported_warned:
                self._unsupported_warned.add(language)
                log.warning(
                    "XTTS does not speak this language; using TTS_LANGUAGE",
                    extra={"language": language, "fallback": self.language},
                )
            return self.language
        return code

    def char_limit(self, language: str) -> int:
        return self.char_limits.get(language.split("-")[0], DEFAULT_CHAR_LIMIT)

    def synthesize(self, text: str, language: str | None = None) -> Iterator[np.ndarray]:
        """Speak `text` in `language` (a Whisper/ISO code; None: TTS_LANGUAGE), cut to the
        language's character limit, streaming every TTS_XTTS_STREAM_CHUNK_SIZE GPT tokens."""
        if self._model is None or self.latents is None or self._torch is None:
            raise RuntimeError("XttsBackend.synthesize before load()")
        assert self.options is not None
        o, torch = self.options, self._torch
        lang = self.language_for(language)
        gpt = torch.from_numpy(self.latents.gpt_cond_latent)
        spk = torch.from_numpy(self.latents.speaker_embedding)
        for piece in fit_char_limit(text, self.char_limit(lang)):
            for chunk in self._model.inference_stream(
                piece,
                lang,
                gpt,
                spk,
                stream_chunk_size=self.tts.xtts_stream_chunk_size,
                temperature=o.temperature,
                length_penalty=o.length_penalty,
                repetition_penalty=o.repetition_penalty,
                top_k=o.top_k,
                top_p=o.top_p,
                enable_text_splitting=False,
            ):
                yield float_to_pcm16(chunk.detach().cpu().numpy().reshape(-1))


def _manager_download(model_name: str) -> Path:
    from TTS.utils.manage import ModelManager

    model_path, _config, _item = ModelManager().download_model(model_name)
    return Path(model_path)
