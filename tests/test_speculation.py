"""Using the end-pointer's wait: the llm and the tts start on a speculative transcript, nothing
is heard until the final transcript confirms it, and a speculation the user did not end up
asking is discarded: never heard, never in memory, never the turn's answer in the log."""

from __future__ import annotations

import pytest

import schemas as s
from ops.bench.stt import espeak_available, normalize
from tests.conftest import wait_for
from tests.test_llm_support import Tap, llm_settings, running
from workers.llm.backends import EmbeddedBackend
from workers.llm.memory import EventLogMemory
from workers.llm.worker import LlmWorker
from workers.recorder.worker import Recorder
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.eventlog.verify import verify
from workers.speaker.config import SpeakerSettings
from workers.speaker.worker import SpeakerWorker
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings
from workers.tts.worker import TtsWorker


def llm(bus: Bus, settings: Settings) -> LlmWorker:
    options = llm_settings(max_tokens=24)
    return LlmWorker(bus, settings, options, EmbeddedBackend(max_tokens=24))


def said(conv: str, utt: str, text: str, k: int | None) -> s.Transcript:
    """A transcript of utterance `utt`: speculative number k, or the final (k None)."""
    return s.Transcript(
        event_id=s.derive_id(utt, "final" if k is None else f"spec-{k}"),
        endpoint="device",
        conversation_id=conv,
        utterance_id=utt,
        text=text,
        language="en",
        language_probability=0.99,
        speculative=k is not None,
    )


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    backend.load()
    return backend


async def test_a_confirmed_speculation_is_the_answer_and_is_heard_only_after_the_final(
    bus: Bus, settings: Settings, piper: PiperBackend
) -> None:
    conv, utt = "spec-ok", s.new_id()
    spec = said(conv, utt, "What is the capital of France?", 0)
    final = said(conv, utt, "What is the capital of France?", None)
    tap = await Tap().start(bus)
    speaker = SpeakerWorker(bus, settings, SpeakerSettings(_env_file=None))  # type: ignore[call-arg]
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(Recorder(bus, settings)), running(llm(bus, settings)):
        async with running(tts), running(speaker):
            await bus.publish(spec)
            # The answer is synthesized during the wait, but not played.
            await wait_for(lambda: tap.of(s.TtsAudioChunk, utt), timeout=60)
            assert not tap.of(s.PlaybackStarted, utt)
            await bus.publish(final)
            played = (await wait_for(lambda: tap.of(s.PlaybackDone, utt), timeout=60))[0]
    await tap.stop()
    (started,) = tap.of(s.ReplyStarted, utt)  # one answer: the final started none of its own
    assert started.speculative and started.generation == spec.event_id
    (committed,) = tap.of(s.ReplyCommitted, utt)
    assert committed.generation == spec.event_id
    assert committed.transcript_event_id == final.event_id
    assert not tap.of(s.ReplyDiscarded, utt)
    first_played = tap.of(s.PlaybackStarted, utt)[0]
    assert tap.arrival(first_played) >= tap.arrival(committed)
    assert played.generation == spec.event_id and not played.interrupted
    log = EventLog(settings.db_url, migrate=False)
    try:
        turn = await wait_for(lambda: _row_with_playback(log, utt), timeout=10)
        assert turn.speculation == "committed" and turn.speculations == 1
        assert turn.reply_text == tap.of(s.ReplyDone, utt)[0].text
        assert verify(log, [conv]) == []
    finally:
        log.close()


async def test_a_speculation_the_user_talked_past_is_discarded_never_heard_or_remembered(
    bus: Bus, settings: Settings, piper: PiperBackend
) -> None:
    """The user paused ("Set a timer for"), then went on: the answer to the pause is thrown
    away, the answer to the whole sentence is the one heard and remembered."""
    conv, utt = "spec-changed", s.new_id()
    first = said(conv, utt, "Set a timer for", 0)
    second = said(conv, utt, "Set a timer for ten minutes.", 1)
    final = said(conv, utt, "Set a timer for ten minutes.", None)
    tap = await Tap().start(bus)
    speaker = SpeakerWorker(bus, settings, SpeakerSettings(_env_file=None))  # type: ignore[call-arg]
    tts = TtsWorker(bus, settings, TtsSettings(_env_file=None), piper)  # type: ignore[call-arg]
    async with running(Recorder(bus, settings)), running(llm(bus, settings)):
        async with running(tts), running(speaker):
            await bus.publish(first)
            await wait_for(lambda: tap.of(s.ReplyToken, utt), timeout=60)
            await bus.publish(second)
            await bus.publish(final)
            played = (await wait_for(lambda: tap.of(s.PlaybackDone, utt), timeout=60))[0]
            await wait_for(
                lambda: any(d.generation == first.event_id for d in tap.of(s.ReplyDone, utt)),
                timeout=30,
            )
    await tap.stop()
    (discarded,) = tap.of(s.ReplyDiscarded, utt)
    assert discarded.generation == first.event_id and discarded.reason == "superseded"
    (committed,) = tap.of(s.ReplyCommitted, utt)
    assert committed.generation == second.event_id
    gone = [d for d in tap.of(s.ReplyDone, utt) if d.generation == first.event_id]
    assert gone and gone[0].finish_reason == "discarded"
    assert played.generation == second.event_id
    assert all(p.generation == second.event_id for p in tap.of(s.PlaybackStarted, utt))
    answer = next(d for d in tap.of(s.ReplyDone, utt) if d.generation == second.event_id)
    log = EventLog(settings.db_url, migrate=False)
    try:
        turn = await wait_for(lambda: _row_with_playback(log, utt), timeout=10)
        assert turn.transcript == final.text and turn.reply_text == answer.text
        assert turn.generation == second.event_id and turn.speculations == 2
        assert verify(log, [conv]) == []
    finally:
        log.close()
    memory = EventLogMemory(settings.db_url)
    try:
        (remembered,) = await memory.previous_turns(conv, "next")
    finally:
        memory.close()
    assert remembered.user_text == final.text
    assert remembered.assistant_text.strip() and remembered.assistant_text in answer.text


async def test_a_final_that_differs_discards_the_speculation_and_is_answered_itself(
    bus: Bus, settings: Settings
) -> None:
    conv, utt = "spec-final", s.new_id()
    spec = said(conv, utt, "What is the", 0)
    final = said(conv, utt, "What is the weather like?", None)
    tap = await Tap().start(bus)
    async with running(llm(bus, settings)):
        await bus.publish(spec)
        await bus.publish(final)
        await wait_for(
            lambda: any(d.generation == final.event_id for d in tap.of(s.ReplyDone, utt)), 60
        )
    await tap.stop()
    (discarded,) = tap.of(s.ReplyDiscarded, utt)
    assert discarded.generation == spec.event_id and discarded.reason == "changed"
    assert not tap.of(s.ReplyCommitted, utt)
    gens = [r.generation for r in tap.of(s.ReplyStarted, utt)]
    assert gens == [spec.event_id, final.event_id]


def _row_with_playback(log: EventLog, utterance_id: str):  # type: ignore[no-untyped-def]
    row = log.turn(utterance_id)
    return row if row is not None and row.playback_done_at else None


@pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")
async def test_pauses_are_not_turns_the_whole_sentence_is_answered_once(
    bus: Bus, settings: Settings, tmp_path
) -> None:
    """ "Set a timer for ... ten minutes." with a 650 ms pause, spoken in real time to the mic
    (smart turn detection) and the stt (speculating): one turn, the whole sentence, one answer
    heard; whatever was started on "Set a timer for" is discarded."""
    from ops.bench.turn import paused_clip
    from tests.test_stt_stream import start_stt
    from workers.mic.config import MicSettings
    from workers.mic.worker import MicWorker
    from workers.runtime.audio import write_wav

    path = write_wav(
        tmp_path / "timer.wav",
        paused_clip("Set a timer for", "ten minutes.", "en-us").tobytes(),
        16000,
    )
    conv = s.new_id()
    tap = await Tap().start(bus)
    stt, stt_task = await start_stt(bus, settings)
    try:
        async with running(llm(bus, settings)):
            mic = MicWorker(
                bus,
                settings,
                MicSettings(_env_file=None, file=str(path), conversation=conv, last_stage="llm"),  # type: ignore[call-arg]
            )
            await mic.setup()
            await mic.run()
            await wait_for(lambda: stt.finals >= 1, timeout=30)
            # Why a pause ended the turn, if it did: each decision with its transcript.
            why = [
                (
                    type(e).__name__,
                    e.model_dump(
                        include={
                            "outcome",
                            "reason",
                            "silence_ms",
                            "audio_ms",
                            "score",
                            "transcript_tail",
                            "text",
                            "speculative",
                        }
                    ),
                )
                for e in tap.events
                if isinstance(e, s.TurnDecision | s.Transcript | s.VoiceStopped)
            ]
            assert len(tap.of(s.VoiceStarted)) == 1, why
            (started,) = tap.of(s.VoiceStarted)
            utt = started.utterance_id
            final = next(t for t in tap.of(s.Transcript, utt) if not t.speculative)

            def answered() -> list:
                kept = {c.generation for c in tap.of(s.ReplyCommitted, utt)} | {final.event_id}
                return [d for d in tap.of(s.ReplyDone, utt) if d.generation in kept]

            await wait_for(answered, timeout=60)
    finally:
        stt.stop()
        await stt_task
        await tap.stop()
    assert len(tap.of(s.VoiceStarted)) == 1 and len(tap.of(s.VoiceStopped)) == 1
    assert normalize(final.text) == normalize("Set a timer for ten minutes.")
    decisions = tap.of(s.TurnDecision, utt)
    # The pause ended nothing: the model's "complete" there was overruled by the transcript
    # ("... for": a "wait" decision) or, on a loaded machine where that transcript came after
    # the speech went on, held without a decision while it was awaited.
    assert [d.outcome for d in decisions].count("end") == 1 and decisions[-1].outcome == "end"
    (answer,) = answered()
    assert answer.text.strip() and answer.finish_reason != "discarded"
    discarded = {d.generation for d in tap.of(s.ReplyDiscarded, utt)}
    assert answer.generation not in discarded
