"""Device audio through a clocked fake PortAudio (tests/fake_portaudio.py): the sound card is
the only fake. Real bus, real Piper tts, real speaker worker and Player; the fake's callbacks
run on a real-time clock with an output latency and block size like a real card, and it keeps
what its DAC emitted, so "how much was heard" is checked against what was."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from schemas import (
    Interrupt,
    PlaybackDone,
    PlaybackStarted,
    Transcript,
    TtsAudioChunk,
    VoiceStarted,
    VoiceStopped,
    derive_id,
    new_id,
)
from tests.conftest import wait_for
from tests.fake_portaudio import FakePortAudio
from tests.test_stt_stream import start_stt
from tests.test_tts_support import Tap, reply, running, turn
from workers.mic.config import MicSettings
from workers.mic.worker import MicWorker
from workers.runtime.audio import resample_pcm16
from workers.runtime.endpoint.sinks import DeviceOutput, DeviceSink, SpeakerError
from workers.runtime.endpoint.sources import MicSource
from workers.speaker.config import SpeakerSettings
from workers.speaker.worker import SpeakerWorker
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker

LATENCY_S, BLOCK = 0.06, 512


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    # Without its variation: Piper says "Paris" a little differently each time, and Whisper
    # tiny heard 2 of 30 of them as "pairs".
    backend = PiperBackend(TtsSettings(_env_file=None, noise_scale=0.0, noise_w_scale=0.0))  # type: ignore[call-arg]
    backend.load()
    return backend


@contextlib.asynccontextmanager
async def speaking(
    bus, settings, piper: PiperBackend, sd: FakePortAudio
) -> AsyncIterator[SpeakerWorker]:
    """The tts (Piper) and the speaker worker on the fake card, running."""
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    speaker = SpeakerWorker(
        bus,
        settings,
        SpeakerSettings(_env_file=None, sink="device"),  # type: ignore[call-arg]
        sink=DeviceSink(sd=sd),
    )
    async with running(tts), running(speaker):
        yield speaker


LONG_REPLY = [
    f"Sentence {i} is a fairly long sentence that takes a while to say." for i in range(3)
]


async def long_reply_playing(bus, tap: Tap, conv: str, utt: str) -> None:
    """A reply of several seconds, from the moment its first sample is heard."""
    for ev in reply(conv, utt, LONG_REPLY):
        await bus.publish(ev)
    await wait_for(lambda: tap.of(PlaybackStarted, utt), timeout=20)


def heard_of(reply_pcm: np.ndarray, emitted: np.ndarray) -> int:
    """How many samples of the reply the DAC emitted. The emitted stream is the reply with
    silence around it (the stream starts before the first write, underruns play zeros), so
    count its non-zero samples and find where the reply has as many."""
    n = int(np.count_nonzero(emitted))
    if n == 0:
        return 0
    cum = np.cumsum(reply_pcm != 0)
    return int(np.searchsorted(cum, n, side="left")) + 1


def tone(ms: int, rate: int) -> bytes:
    t = np.arange(rate * ms // 1000)
    return (3000 * np.sin(2 * np.pi * 440 * t / rate) + 7).astype("<i2").tobytes()


def test_device_output_heard_is_what_the_dac_emitted_and_ends_at_the_last_sample():
    sd = FakePortAudio(output_latency=LATENCY_S, blocksize=BLOCK)
    out = DeviceOutput(sd, 16_000, None)
    out.write(tone(300, 16_000))
    stream = sd.outputs()[0]
    for _ in range(10):
        time.sleep(0.03)
        # Never more than the DAC has emitted (and never far behind it).
        played, emitted = out.played(), int(np.count_nonzero(stream.emitted()))
        assert played <= emitted + 16 and emitted - played < BLOCK
    deadline = time.monotonic() + 300 / 1000 + LATENCY_S + 0.2
    while out.played() < out.queued() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert out.played() == out.queued() == 4800, "a drained queue must end as all heard"
    out.close()


def test_device_sink_without_a_card_says_what_to_do():
    with pytest.raises(SpeakerError, match="SPEAKER_SINK=wav"):
        DeviceOutput(FakePortAudio(fail_open="no device"), 16_000, None)


async def test_device_reply_ends_with_playback_done_and_all_of_it_heard(bus, settings, piper):
    sd = FakePortAudio(output_latency=LATENCY_S, blocksize=BLOCK)
    conv, utt = turn()
    tap = await Tap().start(bus)
    async with speaking(bus, settings, piper, sd):
        for ev in reply(conv, utt, ["Good morning.", "The weather is fine today."]):
            await bus.publish(ev)
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=20))[0]
    started = tap.of(PlaybackStarted, utt)[0]
    pcm = np.frombuffer(b"".join(c.audio for c in tap.of(TtsAudioChunk, utt)), "<i2")
    rate = tap.of(TtsAudioChunk, utt)[0].rate
    reply_ms = 1000 * len(pcm) / rate
    block_ms = 1000 * BLOCK / rate
    assert not done.interrupted
    assert done.played_ms == pytest.approx(reply_ms, abs=block_ms)
    emitted = sd.outputs()[0].emitted()
    assert np.count_nonzero(emitted) == np.count_nonzero(pcm), "the DAC emitted all the reply"
    # Done when the last sample left the DAC, not when it was handed over (latency later).
    assert 1000 * (done.ts - started.ts) >= reply_ms - block_ms
    await tap.stop()


async def test_device_barge_in_halts_and_reports_what_the_dac_emitted(bus, settings, piper):
    sd = FakePortAudio(output_latency=LATENCY_S, blocksize=BLOCK)
    conv, utt = turn()
    tap = await Tap().start(bus)
    async with speaking(bus, settings, piper, sd):
        await long_reply_playing(bus, tap, conv, utt)
        await asyncio.sleep(1.0)
        stop = Interrupt(
            event_id=derive_id(utt, "stop"),
            endpoint="device",
            conversation_id=conv,
            utterance_id=utt,
            reason="user",
        )
        await bus.publish(stop)
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=5))[0]
        await asyncio.sleep(0.3)  # anything still on its way to the DAC would show by now
    pcm = np.frombuffer(b"".join(c.audio for c in tap.of(TtsAudioChunk, utt)), "<i2")
    rate = tap.of(TtsAudioChunk, utt)[0].rate
    assert done.interrupted
    emitted = heard_of(pcm, sd.outputs()[0].emitted())
    assert 0 < emitted < len(pcm)
    played = round(done.played_ms * rate / 1000)
    dac_ms = 1000 * emitted / rate
    print(f"\ndevice barge-in: played_ms {done.played_ms:.1f}, DAC emitted {dac_ms:.1f} ms")
    assert abs(played - emitted) <= rate * 0.005, (played, emitted)
    await tap.stop()


async def test_an_onset_from_the_players_own_capture_stops_the_reply_before_the_bus_has_it(
    bus, settings, piper
):
    """An endpoint that listens and plays in one process (the web gateway) hands its
    capture's onset straight to its player: the reply stops there and then, and the same
    onset arriving later from the stream stops nothing twice."""
    sd = FakePortAudio(output_latency=LATENCY_S, blocksize=BLOCK)
    conv, utt = turn()
    tap = await Tap().start(bus)
    async with speaking(bus, settings, piper, sd) as speaker:
        await long_reply_playing(bus, tap, conv, utt)
        await asyncio.sleep(0.5)
        onset = VoiceStarted(
            endpoint="device", conversation_id=conv, utterance_id=new_id(), source="test"
        )
        # Not on the bus yet: only the direct hand-over can stop the reply.
        await speaker.player.heard_onset(onset)
        stream = sd.outputs()[0]
        heard_at_stop = int(np.count_nonzero(stream.emitted()))
        done = (await wait_for(lambda: tap.of(PlaybackDone, utt), timeout=5))[0]
        assert done.interrupted
        await bus.publish(onset)  # the capture's copy, as the stream brings it to everyone
        await wait_for(lambda: tap.of(VoiceStarted), timeout=5)
        await asyncio.sleep(0.5)
        heard_later = int(np.count_nonzero(stream.emitted()))
    assert heard_later == heard_at_stop, "the reply went on after the onset was handed over"
    stops = tap.of(Interrupt, utt)
    assert len(stops) == 1 and stops[0].by_utterance_id == onset.utterance_id
    assert len(tap.of(PlaybackDone, utt)) == 1
    pcm = np.frombuffer(b"".join(c.audio for c in tap.of(TtsAudioChunk, utt)), "<i2")
    rate = tap.of(TtsAudioChunk, utt)[0].rate
    assert abs(round(done.played_ms * rate / 1000) - heard_of(pcm, stream.emitted())) <= (
        rate * 0.005
    )
    await tap.stop()


def spoken(piper: PiperBackend, text: str, lead_s: float = 0.5) -> np.ndarray:
    """`text` said by Piper at 16 kHz after `lead_s` of silence: what the room brings to
    the microphone."""
    speech = np.concatenate(list(piper.synthesize(text))).astype("<i2").tobytes()
    pcm = np.frombuffer(resample_pcm16(speech, piper.sample_rate, 16_000), "<i2")
    return np.concatenate([np.zeros(int(16_000 * lead_s), np.int16), pcm])


async def test_device_input_feeds_the_mic_capture_and_the_turn_is_transcribed(bus, settings, piper):
    audio = spoken(piper, "What time is it in Paris?")
    sd = FakePortAudio(input_latency=0.02, blocksize=320, input_audio=audio)
    conv = new_id()
    tap = await Tap().start(bus)
    mic = MicWorker(
        bus,
        settings,
        MicSettings(_env_file=None, conversation=conv),  # type: ignore[call-arg]
        source=MicSource(None, block_ms=20, sd=sd),
    )
    stt, stt_task = await start_stt(bus, settings)
    try:
        async with running(mic, consumers=False):
            t0 = time.time()
            # The final: a speculative transcript of the pause may come first (cut shorter).
            finals = lambda: [t for t in tap.of(Transcript) if not t.speculative]  # noqa: E731
            said = (await wait_for(finals, timeout=30))[0]
    finally:
        stt.stop()
        await asyncio.wait_for(stt_task, 15)
    stopped = tap.of(VoiceStopped)[0]
    assert said.conversation_id == conv and tap.of(VoiceStarted)[0].source == "mic:fake card"
    assert "paris" in said.text.lower(), said.text
    # The end of speech is dated by the device clock: about when the fake's clock reached it.
    expected = t0 + len(audio) / 16_000
    assert stopped.speech_end_ts == pytest.approx(expected, abs=0.25)
    assert sd.streams[0].callbacks > 0 and not sd.streams[0].active
    await tap.stop()
