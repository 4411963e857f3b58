"""Piper backend, clause splitting and re-chunking: small parts, real voice."""

from __future__ import annotations

import numpy as np
import pytest

from workers.runtime.models import ModelNotFoundError
from workers.tts.backends import PiperBackend, piper_voice_path, split_clauses
from workers.tts.config import TtsSettings
from workers.tts.stream import Rechunker


def test_bundled_voice_is_found_through_package_metadata_with_its_licence():
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    assert backend.voice_path.name == "en_US-joe-medium.onnx"
    assert backend.voice_path.with_suffix(".onnx.json").is_file()
    assert backend.license == "MIT"  # the packaging; the voice's MODEL_CARD says CC0
    card = (backend.voice_path.parent / "MODEL_CARD").read_text()
    assert "License: CC0" in card


def test_a_missing_voice_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"TTS_VOICE=.*no such file"):
        piper_voice_path(TtsSettings(_env_file=None, voice=tmp_path / "x.onnx"))  # type: ignore[call-arg]
    (tmp_path / "y.onnx").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"y\.onnx\.json is missing"):
        piper_voice_path(TtsSettings(_env_file=None, voice=tmp_path / "y.onnx"))  # type: ignore[call-arg]


def test_piper_speaks_a_sentence_at_its_native_rate():
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    backend.load()
    assert backend.sample_rate == 22050
    audio = np.concatenate(list(backend.synthesize("Testing one two three.")))
    assert audio.dtype == np.int16 and 0.8 < len(audio) / 22050 < 3.0
    assert np.abs(audio).max() > 3000


def test_piper_runs_with_the_workers_threads_and_without_spinning():
    """onnxruntime's threads spin between steps by default, holding cores the llm and the
    stt need on a small machine; TTS_THREADS and TTS_SPIN set them, and the voice speaks the
    same with them."""
    default = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    default.load()
    opts = default._voice.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    one = PiperBackend(TtsSettings(_env_file=None, threads=1, spin=True))  # type: ignore[call-arg]
    one.load()
    opts = one._voice.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    with pytest.raises(Exception, match="allow_spinning"):  # onnxruntime's default: spin
        opts.get_session_config_entry("session.intra_op.allow_spinning")
    text = "Testing one two three."
    a = np.concatenate(list(default.synthesize(text)))
    b = np.concatenate(list(one.synthesize(text)))
    assert a.shape == b.shape and np.abs(a.astype(int) - b).max() < 64


def test_long_sentences_split_at_clauses_and_short_ones_stay_whole():
    text = "Well, if you ask me, the answer depends on the weather; we could go on Sunday morning."
    assert split_clauses(text, 0) == [text]
    assert split_clauses(text, 200) == [text]
    pieces = split_clauses(text, 40)
    assert " ".join(pieces) == text
    assert pieces[0] == "Well, if you ask me, the answer depends on the weather;"
    assert all(len(p) >= 24 for p in pieces)
    assert split_clauses("   ", 40) == []


def test_rechunker_cuts_fixed_chunks_and_resamples_without_losing_audio():
    r = Rechunker(22050, 22050, 1764)
    out = r.push(np.ones(4000, np.int16)) + r.flush()
    assert [len(c) for c in out] == [1764, 1764, 472]
    r = Rechunker(24000, 22050, 1764)
    t = np.arange(48000) / 24000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    out = []
    for piece in np.array_split(tone, 7):  # XTTS-like uneven pieces
        out += r.push(piece)
    out += r.flush()
    joined = np.concatenate(out)
    assert abs(len(joined) - 44100) <= 2
    assert all(len(c) == 1764 for c in out[:-1])
    # no seams: the resampled tone keeps its level all the way through
    mid = joined[2000:-2000].astype(np.float32)
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(10000 / np.sqrt(2), rel=0.02)
