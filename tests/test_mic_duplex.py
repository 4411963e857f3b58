"""MIC_DUPLEX=half: the mic does not listen while a reply plays at its endpoint.

Real tts (Piper) and speaker (WAV sink on its real-time clock) play a reply; the mic worker
streams a file in real time through Silero VAD, with the user talking over the reply and
again after it. The mic learns what plays only from the speaker's events on the bus."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import Interrupt, PlaybackDone, PlaybackStarted, VoiceStarted, VoiceStopped
from tests.conftest import wait_for
from tests.test_tts_support import Tap, reply, running, turn
from workers.mic.config import MicSettings
from workers.mic.worker import MicWorker
from workers.runtime.audio import resample_pcm16
from workers.runtime.endpoint.sources import FileSource
from workers.speaker.config import SpeakerSettings
from workers.speaker.worker import SpeakerWorker
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker

RATE = 16_000


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    backend.load()
    return backend


def speech(piper: PiperBackend, text: str) -> np.ndarray:
    pcm = np.concatenate(list(piper.synthesize(text))).astype("<i2").tobytes()
    return np.frombuffer(resample_pcm16(pcm, piper.sample_rate, RATE), "<i2")


def at(parts: list[tuple[float, np.ndarray]], total_s: float) -> np.ndarray:
    out = np.zeros(int(total_s * RATE), dtype=np.int16)
    for start_s, pcm in parts:
        i = int(start_s * RATE)
        out[i : i + len(pcm)] = pcm
    return out


@pytest.mark.parametrize("duplex", ["half", "full"])
async def test_half_duplex_hears_nothing_while_a_reply_plays(bus, settings, piper, duplex):
    conv, utt = turn()
    over = speech(piper, "Wait, stop, I have another question.")
    after = speech(piper, "What is the time?")
    audio = at([(0.3, over), (7.0, after)], 9.5)
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    speaker = SpeakerWorker(bus, settings, SpeakerSettings(_env_file=None))  # type: ignore[call-arg]
    mic = MicWorker(
        bus,
        settings,
        MicSettings(_env_file=None, conversation=conv, duplex=duplex),  # type: ignore[call-arg]
        source=FileSource(audio=audio, name="room", realtime=True),
    )
    # Set up (models loaded) before the reply: on a loaded machine that takes seconds, and
    # the reply would be over before the mic heard the words spoken over it.
    await mic.setup()
    async with running(tts), running(speaker):
        for ev in reply(conv, utt, ["Good morning.", "Here is the news of the day in brief."]):
            await bus.publish(ev)
        await wait_for(lambda: tap.of(PlaybackStarted, utt), timeout=20)
        await mic.run()  # the file ends: the mic stops
        await wait_for(lambda: len(tap.of(VoiceStopped)) == mic.utterances, timeout=5)
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=10))[0]
    onsets = [v for v in tap.of(VoiceStarted) if v.conversation_id == conv]
    await tap.stop()
    if duplex == "full":
        # Listening throughout: the user's words over the reply stop it.
        assert len(onsets) == 2 and done.interrupted and tap.of(Interrupt, utt)
        return
    assert len(onsets) == 1, "the mic listened while the reply played"
    assert onsets[0].ts > done.ts and not done.interrupted and not tap.of(Interrupt, utt)
    assert onsets[0].stream_offset_ms > 6500  # the words after the reply
    assert mic.ignored_ms > 1000
