"""XTTS v2 without its weights: configuration, reference audio, the latent cache, errors.

The weights (1.8 GB, CPML licence) and torch are not on this machine. What runs before the
model does is tested for real; the latent computation is the model's job, so the cache is
fed a stand-in compute function (counting its calls) behind the same signature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.runtime.audio import read_audio, write_wav
from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError
from workers.tts.backends import PiperBackend, make_backend
from workers.tts.config import TtsSettings
from workers.tts.xtts import (
    REFERENCE_RATE,
    LatentCache,
    XttsBackend,
    XttsError,
    load_reference,
    locate_model,
    manager_model_dir,
    model_identity,
    resolve_device,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Five seconds of real speech (Piper) as a 44.1 kHz stereo WAV, as users record them."""
    piper = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    piper.load()
    text = "My voice is the one you should clone. I speak clearly and calmly, every day."
    speech = np.concatenate(list(piper.synthesize(text)))
    import soxr

    x = soxr.resample(speech.astype(np.float32) / 32768, piper.sample_rate, 44100)
    stereo = np.stack([x, x], axis=1)
    path = tmp_path_factory.mktemp("ref") / "me.wav"
    import soundfile as sf

    sf.write(path, stereo * 0.3, 44100, subtype="PCM_16")
    return path


def fake_weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model": "xtts"}')
    (folder / "model.pth").write_bytes(b"\0" * 128)
    (folder / "vocab.json").write_text("{}")
    return folder


class Counting:
    """Stand-in for Xtts.get_conditioning_latents: shapes of the real ones, from the audio."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, wav: Path) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(wav)
        audio = read_audio(wav, REFERENCE_RATE).astype(np.float32)
        seed = int(abs(audio).sum()) % 2**32
        rng = np.random.default_rng(seed)
        return rng.standard_normal((1, 32, 1024)), rng.standard_normal((1, 512, 1))


def test_settings_come_from_tts_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("TTS_BACKEND", "xtts")
    monkeypatch.setenv("TTS_DEVICE", "cpu")
    monkeypatch.setenv("TTS_XTTS_MODEL_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TTS_SPEAKER_WAV", str(tmp_path / "me.wav"))
    monkeypatch.setenv("TTS_OUTPUT_RATE", "24000")
    cfg = TtsSettings(_env_file=None)  # type: ignore[call-arg]
    assert cfg.backend == "xtts" and cfg.device == "cpu" and cfg.output_rate == 24000
    assert cfg.xtts_model_dir == tmp_path / "w" and cfg.speaker_wav == tmp_path / "me.wav"
    backend = make_backend(cfg, Settings(data_dir=tmp_path / "data", _env_file=None))  # type: ignore[call-arg]
    assert isinstance(backend, XttsBackend) and backend.sample_rate == 24000
    assert backend.cache.folder == tmp_path / "data" / "xtts-latents"
    monkeypatch.setenv("TTS_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        TtsSettings(_env_file=None)  # type: ignore[call-arg]


def test_missing_weights_name_the_folder_and_what_to_do(tmp_path):
    cfg = TtsSettings(_env_file=None, xtts_model_dir=tmp_path / "nothing")  # type: ignore[call-arg]
    with pytest.raises(
        ModelNotFoundError, match=r"XTTS weights not found in .*nothing.*TTS_XTTS_MODEL_DIR"
    ):
        locate_model(cfg)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    cfg = TtsSettings(_env_file=None, xtts_model_dir=tmp_path / "partial")  # type: ignore[call-arg]
    with pytest.raises(ModelNotFoundError, match=r"missing model\.pth, vocab\.json"):
        locate_model(cfg)
    folder = fake_weights(tmp_path / "ok")
    cfg = TtsSettings(_env_file=None, xtts_model_dir=folder)  # type: ignore[call-arg]
    assert locate_model(cfg) == folder


def test_model_manager_copy_is_used_and_an_offline_download_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "home"))
    cfg = TtsSettings(_env_file=None)  # type: ignore[call-arg]
    expected = tmp_path / "home" / "tts" / "tts_models--multilingual--multi-dataset--xtts_v2"
    assert manager_model_dir(cfg.xtts_model_name) == expected

    def offline(name: str) -> Path:
        raise ConnectionError("no internet")

    with pytest.raises(ModelNotFoundError, match=r"could not fetch .*ConnectionError"):
        locate_model(cfg, download=offline)

    def not_installed(name: str) -> Path:
        raise ModuleNotFoundError("No module named 'TTS'", name="TTS")

    with pytest.raises(ModelNotFoundError, match=r"coqui-tts .* not installed.*torch==2\.13\.0"):
        locate_model(cfg, download=not_installed)
    fake_weights(expected)
    assert locate_model(cfg, download=offline) == expected


def test_backend_load_without_coqui_says_how_to_install_it(reference, tmp_path):
    try:
        import TTS  # noqa: F401

        pytest.skip("coqui-tts is installed here")
    except ImportError:
        pass
    cfg = TtsSettings(  # type: ignore[call-arg]
        _env_file=None,
        backend="xtts",
        xtts_model_dir=fake_weights(tmp_path / "w"),
        speaker_wav=reference,
    )
    backend = XttsBackend(cfg, Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]
    with pytest.raises(XttsError, match=r"needs coqui-tts .*pip install torch==2\.13\.0"):
        backend.load()


def test_reference_audio_is_checked_and_normalised(reference, tmp_path):
    with pytest.raises(XttsError, match="set TTS_SPEAKER_WAV"):
        load_reference(None)
    with pytest.raises(XttsError, match="no such file"):
        load_reference(tmp_path / "absent.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(XttsError, match="not a readable audio file"):
        load_reference(tmp_path / "junk.wav")
    short = write_wav(tmp_path / "short.wav", b"\x10\x00" * 16000, 16000)
    with pytest.raises(XttsError, match=r"1\.0 s of audio; XTTS needs at least 3 s"):
        load_reference(short)
    silent = write_wav(tmp_path / "silent.wav", b"\0\0" * 16000 * 5, 16000)
    with pytest.raises(XttsError, match="silent"):
        load_reference(silent)
    pcm = load_reference(reference)  # 44.1 kHz stereo at 0.3 peak in
    assert pcm.dtype == np.int16 and 3 * REFERENCE_RATE < len(pcm) < 30 * REFERENCE_RATE
    assert abs(int(np.abs(pcm).max()) - int(0.75 * 32767)) < 50
    long = write_wav(tmp_path / "long.wav", np.tile(pcm, 8).tobytes(), REFERENCE_RATE)
    assert len(load_reference(long)) == 30 * REFERENCE_RATE


def test_speaker_latents_are_computed_once_and_cached_on_disk(reference, tmp_path):
    pcm = load_reference(reference)
    compute = Counting()
    cache = LatentCache(tmp_path / "latents")
    first = cache.get_or_compute(pcm, "model-a", compute)
    assert not first.cached and len(compute.calls) == 1
    # XTTS was handed the normalised reference, not the user's file
    handed = read_audio(compute.calls[0], REFERENCE_RATE).astype(np.int32)
    assert np.abs(handed - pcm).max() <= 1  # int16 -> float -> int16 rounding
    again = LatentCache(tmp_path / "latents").get_or_compute(pcm, "model-a", compute)
    assert again.cached and len(compute.calls) == 1
    assert np.array_equal(again.gpt_cond_latent, first.gpt_cond_latent.astype(np.float32))
    assert again.speaker_embedding.shape == (1, 512, 1)
    # other weights or another voice: new latents
    cache.get_or_compute(pcm, "model-b", compute)
    cache.get_or_compute(pcm[: 4 * REFERENCE_RATE], "model-a", compute)
    assert len(compute.calls) == 3
    # a torn cache file is recomputed, not trusted
    cache.path(first.key).write_bytes(b"garbage")
    redone = cache.get_or_compute(pcm, "model-a", compute)
    assert not redone.cached and len(compute.calls) == 4
    assert not list((tmp_path / "latents").glob("*.tmp.npz"))


def test_model_identity_changes_with_the_weights(tmp_path):
    a = fake_weights(tmp_path / "a")
    b = fake_weights(tmp_path / "b")
    assert model_identity(a) == model_identity(b)
    (b / "model.pth").write_bytes(b"\0" * 129)
    assert model_identity(a) != model_identity(b)


def test_device_auto_prefers_cuda_then_mps_and_refuses_a_missing_gpu():
    assert resolve_device("auto", True, True) == "cuda"
    assert resolve_device("auto", False, True) == "mps"
    assert resolve_device("auto", False, False) == "cpu"
    assert resolve_device("cpu", True, False) == "cpu"
    with pytest.raises(XttsError, match="TTS_DEVICE=cuda but torch sees no CUDA GPU"):
        resolve_device("cuda", False, False)
    with pytest.raises(XttsError, match="TTS_DEVICE=mps"):
        resolve_device("mps", True, False)


async def test_tts_worker_on_xtts_without_weights_fails_at_start_with_the_reason(
    bus, settings, reference, tmp_path
):
    from workers.tts.worker import TtsWorker

    cfg = TtsSettings(  # type: ignore[call-arg]
        _env_file=None, backend="xtts", speaker_wav=reference, xtts_model_dir=tmp_path / "none"
    )
    worker = TtsWorker(bus, settings, cfg)
    with pytest.raises(ModelNotFoundError, match="XTTS weights not found in"):
        await worker.setup()
