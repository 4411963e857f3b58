"""Garbage and odd-but-valid events at every stage's consumers (real worker processes).

Undecodable messages go to `dlq.<consumer>` with a reason; valid events with odd contents
(gaps, out-of-order indexes, strange audio formats, unknown turns) are handled; no worker
dies, and a normal turn still goes through llm -> tts -> speaker afterwards.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

import schemas as s
from tests.conftest import wait_for
from tests.test_fuzz_recorder import dead_letters, garbage
from workers.runtime.bus import MSG_ID, Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess

CONV = "fuzzw"
#: Worker -> (its durable consumer, the event type its garbage is published as).
TARGETS = {
    "stt": ("stt", "mic.voice-started"),
    "llm": ("llm", "stt.transcript"),
    "tts": ("tts", "llm.reply-started"),
    "speaker": ("speaker-device", "tts.started"),
}


def odd_but_valid() -> list[s.Event]:
    u = {"endpoint": "device", "conversation_id": CONV, "producer": "fuzz"}
    return [
        # stt: an utterance that announces 5 chunks and sends none.
        s.VoiceStarted(**u, utterance_id="gap"),
        s.VoiceStopped(**u, utterance_id="gap", chunks=5, duration_ms=100.0, speech_end_ts=0),
        # llm: an empty transcript, and one at the maximum length.
        s.Transcript(**u, utterance_id="empty", text="   "),
        s.Transcript(**u, utterance_id="long", text="why " * 2500),
        # tts: sentences of a reply that never started, then a reply with a gap.
        s.ReplySentence(**u, utterance_id="unclaimed", text="Alone.", index=0),
        s.ReplyStarted(**u, utterance_id="ooo"),
        s.ReplySentence(**u, utterance_id="ooo", text="Third.", index=2),
        s.ReplySentence(**u, utterance_id="ooo", text="First.", index=0),
        s.ReplyDone(**u, utterance_id="ooo", text="x", sentences=3, tokens=3),
        # speaker: audio in a strange format, chunks out of order.
        s.TtsStarted(**u, utterance_id="odd", rate=8000, channels=2, width=1),
        s.TtsAudioChunk(**u, utterance_id="odd", rate=8000, channels=2, width=1, seq=3,
                      sentence_index=0, audio=b"\x80\x80" * 400),
        s.TtsAudioChunk(**u, utterance_id="odd", rate=8000, channels=2, width=1, seq=0,
                      sentence_index=0, audio=b"\x80\x80" * 400),
        s.TtsDone(**u, utterance_id="odd", sentences=1, chunks=4, audio_ms=100.0),
        s.Interrupt(**u, utterance_id="never-existed"),
    ]  # fmt: skip


async def test_every_stage_survives_garbage_and_odd_events(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(11)
    env = {"speaker": {"SPEAKER_SINK": "wav"}, "llm": {"LLM_MAX_TOKENS": "16"}}
    procs = {
        name: WorkerProcess(
            name, settings, env=env.get(name), log_file=tmp_path / f"{name}.log"
        ).start()
        for name in TARGETS
    }
    try:
        for p in procs.values():
            await p.wait_consumer(bus, timeout=120)
        bad = garbage(rng)
        for name, (_, kind) in TARGETS.items():
            for i, (_, body, headers) in enumerate(bad):
                msg_id = f"{name}-{headers[MSG_ID]}-{i}"
                if headers[MSG_ID] == "someone-else":
                    msg_id = "someone-else-" + name  # valid body, forged id: stays forged
                await bus.js.publish(f"voice.device.{CONV}.{kind}", body, headers={MSG_ID: msg_id})
        for ev in odd_but_valid():
            await bus.publish(ev)
        for durable, _ in TARGETS.values():
            dlq = await wait_for(lambda n=durable: _enough(dead_letters(bus, n), len(bad)), 60, 0.3)
            assert all(m.headers.get("Dlq-Reason") for m in dlq), durable
        await asyncio.sleep(1.0)  # let the odd events be worked on
        for name, p in procs.items():
            assert p.running, f"{name} died: " + (tmp_path / f"{name}.log").read_text()[-3000:]

        # A normal turn still goes through every stage.
        await bus.publish(
            s.Transcript(
                endpoint="device", conversation_id=CONV, utterance_id="normal", text="Say hello."
            )
        )
        await wait_for(lambda: _has(bus, f"voice.*.{CONV}.speaker.playback-done"), 120, 0.3)
    finally:
        codes = {name: p.stop() for name, p in procs.items()}
    llm_code = codes.pop("llm")
    assert all(c == 0 for c in codes.values()), codes
    # -9: it did not stop within 15 s of SIGTERM and was killed. That was the llm reading
    # the 2 500-word question in one uninterruptible call beside a busy CPU; its prompt is
    # now read in chunks that check the stop between them.
    assert llm_code != -9, "the llm did not stop within 15 s of SIGTERM"
    if llm_code != 0:  # known defect, reported: llama.cpp segfaults during the llm's exit
        crash = (tmp_path / "llm.log").read_text()[-3000:]  # faulthandler's stacks, if any
        pytest.xfail(f"llm worker exited with {llm_code} on SIGTERM (all else passed)\n{crash}")


async def _enough(msgs_coro, n: int):  # type: ignore[no-untyped-def]
    msgs = await msgs_coro
    return msgs if len(msgs) >= n else None


async def _has(bus: Bus, subject: str) -> bool:
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    return bool(info.state.subjects)
