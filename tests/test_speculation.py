"""Using the end-pointer's wait: the llm and the tts start on a speculative transcript, nothing
is heard until the final transcript confirms it, and a speculation the user did not end up
asking is discarded: never heard, never in memory, never the turn's answer in the log."""

from __future__ import annotations

import io

import pytest

import schemas as s
from ops.bench.stt import espeak_available, normalize
from tests.conftest import wait_for
from tests.test_llm_support import Tap, llm_settings, running
from workers.cli.conversations import summarize
from workers.cli.demo import LiveView
from workers.cli.replay import recorded_turns, user_audio
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


async def speak_paused(bus: Bus, settings: Settings, tmp_path, **mic) -> tuple[Tap, list]:  # type: ignore[no-untyped-def]
    """ "Set a timer for ... ten minutes." (a 650 ms pause) spoken in real time to the mic,
    the stt (speculating), the llm and the recorder; returns the tap and the end-pointer's
    reasoning (decisions, transcripts, stops) for assertion messages."""
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
        async with running(Recorder(bus, settings)), running(llm(bus, settings)):
            worker = MicWorker(
                bus,
                settings,
                MicSettings(  # type: ignore[call-arg]
                    _env_file=None, file=str(path), conversation=conv, last_stage="llm", **mic
                ),
            )
            await worker.setup()
            await worker.run()
            stops = len(tap.of(s.VoiceStopped))
            await wait_for(lambda: stt.finals >= stops, timeout=30)
            last = tap.of(s.VoiceStarted)[-1].utterance_id
            final = next(t for t in tap.of(s.Transcript, last) if not t.speculative)
            # Every utterance's turn ended (answered, resumed or discarded).
            for v in tap.of(s.VoiceStarted):
                gen = final.event_id if v.utterance_id == last else None
                await wait_for(
                    lambda u=v.utterance_id, g=gen: (
                        [d for d in tap.of(s.ReplyDone, u) if g is None or d.generation == g]
                        or [c for c in tap.of(s.ReplyCommitted, u)]
                    ),
                    timeout=60,
                )
            await wait_for(lambda: _answers(tap), timeout=60)
            assert await _recorded(settings, tap)
    finally:
        stt.stop()
        await stt_task
        await tap.stop()
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
                    "resumes",
                }
            ),
        )
        for e in tap.events
        if isinstance(e, s.TurnDecision | s.Transcript | s.VoiceStopped | s.VoiceStarted)
    ]
    return tap, why


def _answers(tap: Tap) -> list[s.ReplyDone]:
    """Replies that are a turn's answer: not discarded, not cut by a resumption."""
    discarded = {d.generation for d in tap.of(s.ReplyDiscarded)}
    return [
        d
        for d in tap.of(s.ReplyDone)
        if d.generation not in discarded and d.finish_reason not in ("discarded", "resumed")
    ]


async def _recorded(settings: Settings, tap: Tap) -> bool:
    """Every turn-ending event seen on the bus is in the log."""
    ends = (s.ReplyDone, s.ReplyDiscarded, s.ReplyCommitted, s.VoiceStopped)
    ids = [e.event_id for e in tap.events if isinstance(e, ends)]
    log = EventLog(settings.db_url, migrate=False)
    try:
        return await log.wait_recorded(ids, 10)
    finally:
        log.close()


@pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")
async def test_pauses_are_not_turns_the_whole_sentence_is_answered_once(
    bus: Bus, settings: Settings, tmp_path
) -> None:
    """With smart turn detection (the default), whatever was started on "Set a timer for" is
    discarded: one turn holds the whole sentence and gets one answer. The pause either ends
    nothing (the transcript's "for" overrules the model) or, if it did end the turn, the
    speech after it resumes that turn."""
    tap, why = await speak_paused(bus, settings, tmp_path)
    starts = tap.of(s.VoiceStarted)
    assert len(starts) in (1, 2), why
    if len(starts) == 2:  # cut at the pause, then resumed
        assert starts[1].resumes == starts[0].utterance_id, why
    utt = starts[-1].utterance_id
    final = next(t for t in tap.of(s.Transcript, utt) if not t.speculative)
    assert normalize(final.text) == normalize("Set a timer for ten minutes."), why
    decisions = tap.of(s.TurnDecision, utt)
    assert decisions[-1].outcome == "end"
    (answer,) = _answers(tap)
    assert answer.utterance_id == utt and answer.text.strip()


@pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")
async def test_speech_after_a_cut_resumes_the_turn_which_is_answered_once_whole(
    bus: Bus, settings: Settings, tmp_path
) -> None:
    """The vad policy (400 ms hangover) cuts the sentence at its 650 ms pause every time: the
    speech after it resumes the cut turn. The stt hears the whole sentence in the resuming
    utterance, the llm answers it once, the cut turn's answer is stopped or never starts,
    and memory and the log hold one turn."""
    tap, why = await speak_paused(bus, settings, tmp_path, turn="vad", turn_resume_ms=800)
    first, second = tap.of(s.VoiceStarted)
    assert not first.resumes and second.resumes == first.utterance_id, why
    start_ms = first.stream_offset_ms - first.preroll_ms
    assert second.stream_offset_ms - second.preroll_ms == pytest.approx(start_ms)
    # The cut turn's audio reaches the stt in one burst, as pre-roll: nothing is decoded
    # (and answered) at the pause inside it; the speech after the pause is.
    heard = [t.audio_ms for t in tap.of(s.Transcript, second.utterance_id)]
    assert heard and min(heard) > second.preroll_ms, why
    final = next(t for t in tap.of(s.Transcript, second.utterance_id) if not t.speculative)
    assert normalize(final.text) == normalize("Set a timer for ten minutes."), why
    (answer,) = _answers(tap)
    assert answer.utterance_id == second.utterance_id and answer.text.strip()
    # The cut turn's answers were stopped, or discarded if one was done before the user
    # went on (a short reply takes a few hundred ms).
    dropped = {d.generation for d in tap.of(s.ReplyDiscarded, first.utterance_id)}
    for cut in tap.of(s.ReplyDone, first.utterance_id):
        assert cut.finish_reason in ("resumed", "discarded") or cut.generation in dropped, cut
    conv = first.conversation_id
    log = EventLog(settings.db_url, migrate=False)
    try:
        assert verify(log, [conv]) == []
        cut_row = log.turn(first.utterance_id)
        if cut_row is not None and cut_row.llm_done_at:
            assert cut_row.status == "resumed"
        assert log.turn(second.utterance_id).reply_text == answer.text  # type: ignore[union-attr]
        # Replay speaks the sentence once: the resumed utterance is no turn of its own.
        (listed,) = [c for c in summarize(log) if c["conversation_id"] == conv]
        assert listed["turns"] == 1  # `just conversations`
        (again,) = recorded_turns(log, conv)
        assert again.row.utterance_id == second.utterance_id
        assert again.pcm.startswith(user_audio(log, first.utterance_id)[:-640])
    finally:
        log.close()
    # The demo's live view shows one turn, done when its answer is.
    view = LiveView(io.StringIO())
    for e in tap.events:
        if e.conversation_id == conv:
            view.on_event(e)
    assert list(view.turns) == [second.utterance_id] and view.resumed == {first.utterance_id}
    memory = EventLogMemory(settings.db_url)
    try:
        (remembered,) = await memory.previous_turns(conv, "next")
    finally:
        memory.close()
    assert normalize(remembered.user_text) == normalize("Set a timer for ten minutes.")
    assert remembered.assistant_text.strip() and remembered.assistant_text in answer.text


async def test_a_cut_turn_answered_in_full_before_the_user_went_on_is_discarded(
    bus: Bus, settings: Settings
) -> None:
    """A short answer to the cut half can be done before the speech after the pause is heard:
    the onset that resumes the turn still discards it, so the turn has one answer."""
    conv, cut, whole = "resume-late", s.new_id(), s.new_id()
    tap = await Tap().start(bus)
    async with running(Recorder(bus, settings)), running(llm(bus, settings)):
        await bus.publish(said(conv, cut, "Set a timer.", None))
        (done,) = await wait_for(lambda: tap.of(s.ReplyDone, cut), timeout=60)
        assert done.finish_reason in ("stop", "length")
        onset = s.VoiceStarted(
            endpoint="device", conversation_id=conv, utterance_id=whole, resumes=cut
        )
        await bus.publish(onset)
        (dropped,) = await wait_for(lambda: tap.of(s.ReplyDiscarded, cut), timeout=30)
        await bus.publish(said(conv, whole, "Set a timer for ten minutes.", None))
        answer = await tap.done(whole, timeout=60)
        assert await _recorded(settings, tap)
    await tap.stop()
    assert dropped.generation == done.generation and dropped.reason == "resumed"
    assert answer.finish_reason in ("stop", "length") and answer.text.strip()
    assert [a.utterance_id for a in _answers(tap)] == [whole]
    log = EventLog(settings.db_url, migrate=False)
    try:
        assert log.turn(cut).status == "resumed"  # type: ignore[union-attr]
    finally:
        log.close()
    memory = EventLogMemory(settings.db_url)
    try:
        (remembered,) = await memory.previous_turns(conv, "next")
    finally:
        memory.close()
    assert remembered.utterance_id == whole
