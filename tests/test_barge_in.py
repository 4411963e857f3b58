"""Barge-in end to end: a file source talks over the reply; everything stops within 100 ms.

Real parts throughout, each worker in its own process as deployed: the mic worker streams a
WAV in real time through Silero VAD, the tts worker speaks with Piper, the speaker plays on
the WAV sink's real-time clock, the recorder writes the SQLite event log. Only the llm is
stood in for by this test (it publishes reply sentences as a slow llm would and stops on the
interrupt, as the llm worker does).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from schemas import (
    Interrupt,
    PlaybackDone,
    PlaybackStarted,
    ReplyDone,
    TtsAudioChunk,
    TtsDone,
    VoiceStarted,
    derive_id,
)
from tests.conftest import wait_for
from tests.support import budget_ms, bus_lag_ms
from tests.test_tts_support import Tap, reply_started, sentences, turn
from workers.runtime.audio import write_wav
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess
from workers.tts.backends import PiperBackend
from workers.tts.config import TtsSettings

REPLY = [
    "Sure, let me tell you about the history of the city.",
    "It was founded a long time ago on the banks of a wide river.",
    "Over the centuries it grew into a busy centre of trade and learning.",
    "Today it is known for its museums, its parks and its many bridges.",
    "Every spring a festival fills the old squares with music and food.",
    "Visitors often take a boat trip along the river to see the sights.",
    "The old town hall has a clock tower that you can climb for the view.",
    "In the evening the cafes along the water are full of people talking.",
]
USER = "Wait, stop, I have another question."
SILENCE_S = 1.0


def user_wav(piper: PiperBackend, folder: Path) -> Path:
    """The user's line after a second of silence, as a mic file source plays it."""
    speech = np.concatenate(list(piper.synthesize(USER)))
    lead = np.zeros(int(SILENCE_S * piper.sample_rate), dtype=np.int16)
    pcm = np.concatenate([lead, speech]).tobytes()
    return write_wav(folder / "user.wav", pcm, piper.sample_rate)


async def slow_llm(bus, tap: Tap, conv: str, utt: str, gap_s: float = 1.5) -> None:
    """Publishes one sentence per `gap_s`; on an interrupt stops and says so."""
    published = 0
    await bus.publish(reply_started(conv, utt))
    for s in sentences(conv, utt, REPLY):
        if tap.of(Interrupt, utt):
            break
        await bus.publish(s)
        published += 1
        for _ in range(int(gap_s / 0.01)):
            if tap.of(Interrupt, utt):
                break
            await asyncio.sleep(0.01)
    interrupted = bool(tap.of(Interrupt, utt))
    await bus.publish(
        ReplyDone(
            event_id=derive_id(utt, "reply-done"),
            endpoint="device",
            conversation_id=conv,
            utterance_id=utt,
            text=" ".join(REPLY[:published]),
            sentences=published,
            tokens=0,
            finish_reason="interrupted" if interrupted else "stop",
        )
    )


@pytest.mark.slow
async def test_barge_in_stops_tts_and_speaker_within_100ms_and_logs_what_was_heard(
    bus, settings, tmp_path
):
    piper = PiperBackend(TtsSettings(_env_file=None))  # type: ignore[call-arg]
    piper.load()
    wav = user_wav(piper, tmp_path)
    conv, reply_utt = turn()
    tap = await Tap().start(bus)
    logs = tmp_path / "logs"
    workers = {
        "recorder": WorkerProcess("recorder", settings, log_file=logs / "recorder.log"),
        "tts": WorkerProcess("tts", settings, log_file=logs / "tts.log"),
        "speaker": WorkerProcess("speaker", settings, log_file=logs / "speaker.log"),
    }
    mic = WorkerProcess(
        "mic",
        settings,
        args=["--file", str(wav), "--conversation", conv],
        log_file=logs / "mic.log",
    )
    try:
        for w in workers.values():
            w.start()
        for w in workers.values():
            await w.wait_consumer(bus)
        # The baseline, with every worker up: how late a message gets through right now.
        lag_ms = await bus_lag_ms(bus)
        llm = asyncio.create_task(slow_llm(bus, tap, conv, reply_utt))
        await wait_for(lambda: tap.of(PlaybackStarted, reply_utt), timeout=20)
        mic.start()  # the user starts talking over the reply
        voice = (await wait_for(lambda: tap.of(VoiceStarted), timeout=20))[0]
        done = (await wait_for(lambda: tap.of(PlaybackDone, reply_utt), timeout=5))[0]
        tts_done = (await wait_for(lambda: tap.of(TtsDone, reply_utt), timeout=5))[0]
        await llm
        log = EventLog(settings.db_url)
        try:
            logged = await wait_for(
                lambda: log.events(utterance_id=reply_utt, types=[PlaybackDone.type]), timeout=10
            )
        finally:
            log.close()
        await wait_for(lambda: not mic.running, timeout=20)
    finally:
        mic.stop()
        for w in workers.values():
            w.stop()

    started = tap.of(PlaybackStarted, reply_utt)[0]
    stop = tap.of(Interrupt, reply_utt)[0]
    assert stop.reason == "barge-in" and stop.by_utterance_id == voice.utterance_id
    assert voice.conversation_id == conv

    assert done.interrupted and tts_done.interrupted
    speaker_ms = 1000 * (done.ts - voice.ts)
    tts_ms = 1000 * (tts_done.ts - voice.ts)
    seen_ms = 1000 * (tap.arrival(done) - voice.ts)
    print(
        f"\nbarge-in: speaker stopped {speaker_ms:.1f} ms (its event on the bus {seen_ms:.1f} ms),"
        f" tts {tts_ms:.1f} ms after voice-started; heard {done.played_ms:.0f} ms,"
        f" {1000 * (voice.ts - started.ts):.0f} ms by wall clock; bus lag p90 {lag_ms:.2f} ms"
    )
    # 100 ms on an idle machine, widened by the bus lag measured in this run (a loaded
    # machine delays every hop; a barge-in that waited for the sentence would still fail).
    limit = budget_ms(100, lag_ms)
    assert speaker_ms < limit, f"speaker stopped {speaker_ms:.0f} ms after speech start"
    assert tts_ms < limit, f"tts stopped {tts_ms:.0f} ms after speech start"

    # How much was heard: the time from the first sample to the user's voice, to a few ms.
    heard_ms = 1000 * (voice.ts - started.ts)
    assert done.played_ms == pytest.approx(heard_ms, abs=budget_ms(50, lag_ms))
    assert 0 < done.played_ms < sum(len(c.audio) for c in tap.of(TtsAudioChunk, reply_utt)) / 44.1
    assert done.last_sentence_index >= 0 and done.last_sentence_played_ms > 0
    with wave.open(done.wav) as w:
        assert 1000 * w.getnframes() / w.getframerate() == pytest.approx(done.played_ms, abs=1)

    # Nothing of the reply was synthesized after tts.done; the llm stood down.
    chunks = tap.of(TtsAudioChunk, reply_utt)
    assert tts_done.chunks == len(chunks)
    assert all(c.ts <= tts_done.ts for c in chunks)
    reply_done = tap.of(ReplyDone, reply_utt)[0]
    assert reply_done.finish_reason == "interrupted" and reply_done.sentences < len(REPLY)

    # The event log records exactly what the bus carried.
    assert len(logged) == 1 and logged[0].played_ms == done.played_ms
    assert logged[0].sentences_heard == done.sentences_heard

    await tap.stop()
