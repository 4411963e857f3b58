"""Barge-in before the reply is heard: the user speaks again after the transcript, before the
first reply sample plays. Nothing of the reply is heard, the speaker drops what it holds,
the tts stops, the llm cancels, and the log records the reply as interrupted with 0 ms heard.

Real workers in-process: recorder, llm (embedded SmolLM2), tts (Piper), speaker (WAV sink on
its real-time clock). The test publishes what the mic and the stt would (voice onsets and
transcripts), at the moments that matter.
"""

from __future__ import annotations

import pytest

import schemas as s
from tests.conftest import wait_for
from tests.test_llm_support import Tap, llm_settings, running
from workers.llm.backends import EmbeddedBackend
from workers.llm.worker import LlmWorker
from workers.recorder.worker import Recorder
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.speaker.config import SpeakerSettings
from workers.speaker.worker import SpeakerWorker
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker

QUESTION = "Tell me a long story about a dragon and a castle."


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    backend.load()
    return backend


def common(conv: str, utt: str) -> dict[str, str]:
    return {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}


def onset(conv: str, utt: str) -> s.VoiceStarted:
    return s.VoiceStarted(**common(conv, utt), producer="mic-test", source="test")


def stopped(conv: str, utt: str) -> s.VoiceStopped:
    return s.VoiceStopped(
        **common(conv, utt), producer="mic-test", chunks=0, duration_ms=1500, speech_end_ts=1.0
    )


def said(conv: str, utt: str, k: int | None = None) -> s.Transcript:
    return s.Transcript(
        event_id=s.derive_id(utt, "final" if k is None else f"spec-{k}"),
        **common(conv, utt),
        producer="stt-test",
        text=QUESTION,
        language="en",
        language_probability=0.99,
        speculative=k is not None,
    )


def workers(bus: Bus, settings: Settings, piper: PiperBackend):  # type: ignore[no-untyped-def]
    llm = LlmWorker(
        bus,
        settings,
        llm_settings(max_tokens=160),
        EmbeddedBackend(max_tokens=160),
    )
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    speaker = SpeakerWorker(bus, settings, SpeakerSettings(_env_file=None))  # type: ignore[call-arg]
    return Recorder(bus, settings), llm, tts, speaker


def assert_nothing_heard(tap: Tap, utt: str, by: str) -> s.PlaybackDone:
    assert not tap.of(s.PlaybackStarted, utt), "the reply was heard over the user"
    dones = tap.of(s.PlaybackDone, utt)
    assert dones and all(d.interrupted and d.played_ms == 0 for d in dones)
    stops = tap.of(s.Interrupt, utt)
    assert stops and all(i.reason == "barge-in" and i.by_utterance_id == by for i in stops)
    assert all(d.interrupted for d in tap.of(s.TtsDone, utt))
    return dones[0]


async def test_an_onset_after_the_transcript_stops_the_reply_before_anything_is_heard(
    bus: Bus, settings: Settings, piper: PiperBackend
) -> None:
    conv, utt, again = "early-barge", s.new_id(), s.new_id()
    tap = await Tap().start(bus)
    recorder, llm, tts, speaker = workers(bus, settings, piper)
    async with running(recorder), running(llm), running(tts), running(speaker):
        await bus.publish(onset(conv, utt))
        await bus.publish(stopped(conv, utt))
        await bus.publish(said(conv, utt))
        voice = onset(conv, again)
        await bus.publish(voice)  # the user goes on before the answer sounds
        await wait_for(lambda: tap.of(s.PlaybackDone, utt), timeout=60)
        reply = (await wait_for(lambda: tap.of(s.ReplyDone, utt), timeout=60))[0]
        await wait_for(lambda: tap.of(s.TtsDone, utt), timeout=30)
        log = EventLog(settings.db_url, migrate=False)
        try:
            row = await wait_for(lambda: _row_with_playback(log, utt), timeout=10)
        finally:
            log.close()
    await tap.stop()
    done = assert_nothing_heard(tap, utt, again)
    stop = tap.of(s.Interrupt, utt)[0]
    print(
        f"\nearly barge-in: interrupt {1000 * (stop.ts - voice.ts):.0f} ms, playback-done"
        f" {1000 * (done.ts - voice.ts):.0f} ms, llm done {1000 * (reply.ts - voice.ts):.0f} ms"
        f" after the onset ({reply.tokens} tokens generated)"
    )
    assert reply.finish_reason == "interrupted", "the llm went on generating"
    assert row.interrupted and row.played_ms == 0


async def test_an_onset_kills_a_held_speculative_generation_unheard(
    bus: Bus, settings: Settings, piper: PiperBackend
) -> None:
    """The answer to a speculative transcript is synthesized and held; the user's turn ends,
    and they speak again before the final transcript commits it: it is never heard."""
    conv, utt, again = "early-barge-spec", s.new_id(), s.new_id()
    spec = said(conv, utt, 0)
    tap = await Tap().start(bus)
    recorder, llm, tts, speaker = workers(bus, settings, piper)
    async with running(recorder), running(llm), running(tts), running(speaker):
        await bus.publish(onset(conv, utt))
        await bus.publish(spec)
        await wait_for(lambda: tap.of(s.TtsAudioChunk, utt), timeout=60)  # held, unheard
        await bus.publish(stopped(conv, utt))
        await bus.publish(onset(conv, again))
        await bus.publish(said(conv, utt))  # the final agrees with the speculation
        await wait_for(lambda: tap.of(s.PlaybackDone, utt), timeout=60)
        await wait_for(
            lambda: any(d.generation == spec.event_id for d in tap.of(s.ReplyDone, utt)), 60
        )
        await wait_for(lambda: tap.of(s.TtsDone, utt), timeout=30)
    await tap.stop()
    done = assert_nothing_heard(tap, utt, again)
    assert done.generation == spec.event_id
    gen = next(d for d in tap.of(s.ReplyDone, utt) if d.generation == spec.event_id)
    assert gen.finish_reason in ("interrupted", "stop")  # it may have ended before the onset
    assert not [c for c in tap.of(s.TtsAudioChunk, utt) if c.ts > tap.of(s.TtsDone, utt)[0].ts]


def _row_with_playback(log: EventLog, utterance_id: str):  # type: ignore[no-untyped-def]
    row = log.turn(utterance_id)
    return row if row is not None and row.playback_done_at else None
