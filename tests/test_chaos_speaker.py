"""Chaos at the speaker: killed -9 while a reply plays in real time, restarted.

The speaker claims a reply on its tts.started and acks the claim only once playback-done is
published. A speaker killed in between gets the claim back after restart, sees that an
earlier process had started playing the reply, and ends the turn with control.error
"speaker-restarted": the turn never silently hangs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess

pytestmark = pytest.mark.slow

RATE, CHUNK = 22_050, 1764  # 80 ms chunks, as the tts worker sends them


async def publish_reply(bus: Bus, common: dict[str, str], n: int) -> None:
    """A one-sentence reply's audio (`n` chunks of silence), its sentence end and tts.done."""
    for i in range(n):
        await bus.publish(
            s.TtsAudioChunk(
                seq=i,
                rate=RATE,
                sentence_index=0,
                offset_ms=i * 80.0,
                audio=bytes(2 * CHUNK),
                **common,
            )
        )
    ms = n * 80.0
    await bus.publish(s.SentenceDone(seq=0, sentence_index=0, text="Hello.", audio_ms=ms, **common))
    await bus.publish(s.TtsDone(sentences=1, chunks=n, audio_ms=ms, **common))


async def test_speaker_killed_mid_playback_still_ends_the_turn(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    conv, utt = "chaos-speaker", s.new_id()
    ended: list[s.Event] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        e = s.decode(msg.data)
        if isinstance(e, s.PlaybackDone | s.ControlError):
            ended.append(e)
        elif isinstance(e, s.PlaybackStarted):
            started.set()

    started = asyncio.Event()
    sub = await bus.nc.subscribe(s.subject_filter("*", conv), cb=on_msg)
    speaker = WorkerProcess(
        "speaker",
        settings,
        env={"SPEAKER_SINK": "wav", "SPEAKER_REALTIME": "1", "SPEAKER_ACK_WAIT_S": "2"},
        log_file=tmp_path / "speaker.log",
    ).start()
    try:
        await speaker.wait_consumer(bus, timeout=60)
        common = {
            "endpoint": "device",
            "conversation_id": conv,
            "utterance_id": utt,
            "producer": "tts",
        }
        await bus.publish(s.TtsStarted(rate=RATE, **common))
        await publish_reply(bus, common, 38)  # about 3 s of audio
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.sleep(0.8)  # about a quarter is heard
        speaker.kill()
        speaker.start()
        await speaker.wait_consumer(bus, timeout=60)
        await wait_for(lambda: ended, timeout=8)
        await asyncio.sleep(1.0)  # anything else that would end the turn arrives now
    finally:
        await sub.unsubscribe()
        speaker.stop()
    assert len(ended) == 1, ended
    (end,) = ended
    assert isinstance(end, s.ControlError)
    assert (end.failed_stage, end.code) == ("speaker", "speaker-restarted")


async def test_a_restarted_speaker_plays_a_new_generation_of_a_turn_whose_old_one_was_heard(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """Generation A of a turn was heard (then the llm answered again: B). The speaker held
    B's claim, waiting for its commit, and was killed. The claim comes back to the restarted
    speaker: A's playback says nothing about B, which is played from its start."""
    from workers.runtime.procs import ready_durable

    conv, utt = "chaos-speaker-gen", s.new_id()
    turn = {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}
    ended: list[s.Event] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        e = s.decode(msg.data)
        if isinstance(e, s.PlaybackDone | s.ControlError) and e.producer != "test":
            ended.append(e)

    sub = await bus.nc.subscribe(s.subject_filter("*", conv), cb=on_msg)
    speaker = WorkerProcess(
        "speaker",
        settings,
        env={"SPEAKER_SINK": "wav", "SPEAKER_ACK_WAIT_S": "2"},
        log_file=tmp_path / "speaker.log",
    ).start()
    try:
        await speaker.wait_consumer(bus, timeout=60)
        gen_a, gen_b = s.new_id(), s.new_id()
        a = {**turn, "producer": "test", "generation": gen_a}
        await bus.publish(s.PlaybackStarted(**a))
        await bus.publish(s.PlaybackDone(played_ms=500.0, interrupted=True, **a))
        b = {**turn, "producer": "tts", "generation": gen_b}
        await bus.publish(s.TtsStarted(rate=RATE, speculative=True, **b))
        durable = ready_durable("speaker", speaker.settings)

        async def claimed() -> bool:
            info = await bus.js.consumer_info(bus.stream, durable)
            return info.num_ack_pending == 1

        await wait_for(claimed, timeout=30)
        speaker.kill()
        speaker.start()
        await speaker.wait_consumer(bus, timeout=60)
        await bus.publish(s.ReplyCommitted(transcript_event_id=gen_b, **{**b, "producer": "llm"}))
        await publish_reply(bus, b, 3)
        await wait_for(lambda: ended, timeout=30)
    finally:
        await sub.unsubscribe()
        speaker.stop()
    (end,) = ended
    assert isinstance(end, s.PlaybackDone) and end.generation == gen_b, end
