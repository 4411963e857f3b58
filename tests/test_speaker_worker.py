"""The speaker worker: real tts (Piper) -> bus -> WAV sink on a real-time playback clock."""

from __future__ import annotations

import asyncio
import wave

import pytest

from schemas import Interrupt, PlaybackDone, PlaybackStarted, TtsAudioChunk, TtsDone, derive_id
from tests.conftest import wait_for
from tests.support import budget_ms, bus_lag_ms
from tests.test_tts_support import Tap, reply, reply_done, reply_started, running, turn
from workers.runtime.endpoint.sinks import ClockedOutput, DeviceSink, SpeakerError
from workers.speaker.config import SpeakerSettings
from workers.speaker.worker import SpeakerWorker
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker

TEXTS = ["Good morning.", "Here is the news of the day in brief."]


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    backend.load()
    return backend


def speaker_settings(**kw: object) -> SpeakerSettings:
    return SpeakerSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def wav_ms(path: str) -> float:
    with wave.open(path) as w:
        return 1000 * w.getnframes() / w.getframerate()


async def test_wav_sink_plays_in_real_time_and_reports_the_whole_reply_heard(bus, settings, piper):
    conv, utt = turn()
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(tts), running(SpeakerWorker(bus, settings, speaker_settings())):
        for ev in reply(conv, utt, TEXTS):
            await bus.publish(ev)
        lag_ms = await bus_lag_ms(bus, n=10, every_s=0.01)  # while it plays
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=20))[0]
    started = tap.of(PlaybackStarted, utt)[0]
    audio_ms = sum(len(c.audio) for c in tap.of(TtsAudioChunk, utt)) / 2 / 22.05
    assert not done.interrupted
    assert done.played_ms == pytest.approx(audio_ms, abs=1)
    # Paced by the clock: never faster than the audio lasts. It may take longer when
    # synthesis falls behind playback (an underrun pauses the clock, as a device would).
    assert 1000 * (done.ts - started.ts) >= audio_ms - 20
    assert done.sentences_heard == 2 and done.last_sentence_index == 1
    assert done.wav.endswith(f"{conv}/{utt}.wav")
    assert wav_ms(done.wav) == pytest.approx(audio_ms, abs=1)
    first_chunk = tap.of(TtsAudioChunk, utt)[0]
    late_ms = 1000 * (started.ts - first_chunk.ts)
    assert late_ms < budget_ms(100, lag_ms), f"playback started {late_ms:.0f} ms late"
    await tap.stop()


async def test_interrupted_reply_wav_stops_where_the_listener_stopped_hearing(bus, settings, piper):
    conv, utt = turn()
    texts = [f"Sentence {i} is a fairly long sentence that takes a while to say." for i in range(4)]
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(tts), running(SpeakerWorker(bus, settings, speaker_settings())):
        for ev in reply(conv, utt, texts):
            await bus.publish(ev)
        started = (await wait_for(lambda: tap.of(PlaybackStarted, utt), timeout=20))[0]
        lag_ms = await bus_lag_ms(bus, n=10, every_s=0.01)  # while it plays
        await asyncio.sleep(1.2 - 0.01 * 10)
        stop = Interrupt(
            event_id=derive_id(utt, "stop"),
            endpoint="device",
            conversation_id=conv,
            utterance_id=utt,
            reason="user",
        )
        await bus.publish(stop)
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=5))[0]
    assert done.interrupted
    assert 1000 * (done.ts - stop.ts) < budget_ms(100, lag_ms)
    # heard = the time between the first sample and the interrupt, to a few ms (idle)
    heard_ms = 1000 * (stop.ts - started.ts)
    assert done.played_ms == pytest.approx(heard_ms, abs=budget_ms(40, lag_ms))
    assert wav_ms(done.wav) == pytest.approx(done.played_ms, abs=1)
    chunks = tap.of(TtsAudioChunk, utt)
    starts: dict[int, float] = {}
    pos = 0.0
    for c in chunks:
        starts.setdefault(c.sentence_index, pos)
        pos += len(c.audio) / 2 / 22.05
    playing = max(i for i, s in starts.items() if s < done.played_ms)
    assert done.last_sentence_index == playing
    assert done.sentences_heard == playing
    expected_ms = done.played_ms - starts[playing]
    assert done.last_sentence_played_ms == pytest.approx(expected_ms, abs=1)
    await tap.stop()


async def test_replies_of_one_conversation_play_one_after_another(bus, settings, piper):
    conv, first = turn()
    second = turn()[1]
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(tts), running(SpeakerWorker(bus, settings, speaker_settings())):
        for utt, texts in ((first, ["One."]), (second, ["Two."])):
            for ev in reply(conv, utt, texts):
                await bus.publish(ev)
        await wait_for(lambda: tap.of(PlaybackDone, second), timeout=20)
    d1, d2 = tap.of(PlaybackDone, first)[0], tap.of(PlaybackDone, second)[0]
    s2 = tap.of(PlaybackStarted, second)[0]
    assert s2.ts >= d1.ts - 0.005, "the second reply talked over the first"
    assert not d1.interrupted and not d2.interrupted
    await tap.stop()


async def test_batch_rendering_does_not_wait_for_the_clock(bus, settings, piper):
    conv, utt = turn()
    texts = [f"Sentence {i} of a reply rendered as fast as possible." for i in range(3)]
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    speaker = SpeakerWorker(bus, settings, speaker_settings(realtime=False))
    async with running(tts), running(speaker):
        for ev in reply(conv, utt, texts):
            await bus.publish(ev)
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=20))[0]
    tts_done = tap.of(TtsDone, utt)[0]
    assert done.played_ms > 5000
    # finished as soon as the last audio was in, not seconds of clock later
    assert 1000 * (done.ts - tts_done.ts) < 200
    assert wav_ms(done.wav) == pytest.approx(done.played_ms, abs=1)
    await tap.stop()


def test_simulated_clock_waits_through_an_underrun():
    now = [100.0]
    out = ClockedOutput(1000, None, realtime=True, clock=lambda: now[0])
    out.write(b"\0\0" * 100)  # 100 ms queued at t=100
    now[0] = 100.05
    assert out.played() == 50
    now[0] = 100.3  # ran dry at 100.1
    assert out.played() == 100
    out.write(b"\0\0" * 100)  # more audio: playout resumes now, not in the past
    assert out.played() == 100
    now[0] = 100.32
    assert out.played() == 120
    assert out.halt() == 120
    now[0] = 101.0
    assert out.played() == 120


def test_device_sink_without_a_sound_card_says_what_to_do():
    with pytest.raises(SpeakerError, match="SPEAKER_SINK=wav"):
        DeviceSink()


async def test_a_reply_without_audio_still_ends_with_nothing_heard(bus, settings, piper):
    conv, utt = turn()
    tap = await Tap().start(bus)
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(tts), running(SpeakerWorker(bus, settings, speaker_settings())):
        await bus.publish(reply_started(conv, utt))
        await bus.publish(reply_done(conv, utt, []))
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=10))[0]
    assert done.played_ms == 0 and done.last_sentence_index == -1 and not done.interrupted
    await tap.stop()
