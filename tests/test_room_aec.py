"""The simulated loudspeaker room: the reply comes back into the mic, echo cancellation keeps
the assistant from interrupting itself, and the user can still stop it.

Real parts: the mic worker (file source through MIC_ROOM=loudspeaker, the speex canceller,
Silero VAD) and the speaker worker (WAV sink on its real-time clock, publishing what it
plays as the echo reference) each in its own process, on a real NATS. This test stands in
for the tts: it publishes a reply's audio (Piper, the bundled voice) as the tts worker does.
The user's lines are spoken by espeak-ng.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ops.bench.stt import espeak_available, synth_espeak, synth_piper
from schemas import (
    EchoCancelled,
    Interrupt,
    PlaybackDone,
    PlaybackStarted,
    SentenceDone,
    TtsAudioChunk,
    TtsDone,
    TtsStarted,
    VoiceStarted,
    VoiceStopped,
    derive_id,
)
from tests.conftest import wait_for
from tests.support import Tap
from workers.runtime.audio import write_wav
from workers.runtime.procs import WorkerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng"),
]

REPLY = (
    "The capital of France is Paris. It is a large city on the river Seine, "
    "with many museums, parks and old bridges, and millions of people visit it every year."
)
RATE = 16_000


def line(folder: Path, name: str, text: str, lead_s: float = 0.5) -> Path:
    speech = synth_espeak(text)
    pcm = np.concatenate([np.zeros(int(lead_s * RATE), np.int16), speech])
    return write_wav(folder / f"{name}.wav", pcm.tobytes(), RATE)


async def speak_reply(bus, conv: str, utt: str, pcm: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """What the tts worker publishes for one reply, in 100 ms chunks."""
    base = {"endpoint": "device", "conversation_id": conv, "utterance_id": utt}
    await bus.publish(TtsStarted(**base, event_id=derive_id(utt, "ts"), rate=RATE))
    step = RATE // 10
    for seq, i in enumerate(range(0, len(pcm), step)):
        chunk = pcm[i : i + step].astype("<i2").tobytes()
        await bus.publish(
            TtsAudioChunk(
                **base,
                event_id=derive_id(utt, "c", str(seq)),
                seq=seq,
                rate=RATE,
                audio=chunk,
                sentence_index=0,
            )
        )
    ms = 1000.0 * len(pcm) / RATE
    await bus.publish(
        SentenceDone(
            **base, event_id=derive_id(utt, "sd"), sentence_index=0, text=REPLY, audio_ms=ms
        )
    )
    await bus.publish(
        TtsDone(**base, event_id=derive_id(utt, "td"), sentences=1, chunks=seq + 1, audio_ms=ms)
    )


async def room_run(bus, settings, tmp_path: Path, mic_args: list[str]) -> Tap:  # type: ignore[no-untyped-def]
    """The user asks (first file of `mic_args`); the reply is played into the room."""
    conv = "room" + tmp_path.name[-8:].replace("_", "")
    tap = await Tap().start(bus)
    logs = tmp_path / "logs"
    speaker = WorkerProcess("speaker", settings, log_file=logs / "speaker.log").start()
    mic = WorkerProcess(
        "mic",
        settings,
        args=[*mic_args, "--conversation", conv, "--room", "loudspeaker"],
        log_file=logs / "mic.log",
    )
    reply = synth_piper(REPLY)
    try:
        await speaker.wait_consumer(bus)
        mic.start()
        stopped = await wait_for(lambda: tap.of(VoiceStopped), timeout=30)
        asker = stopped[0].utterance_id
        await speak_reply(bus, conv, asker, reply)
        await wait_for(lambda: tap.of(PlaybackDone, asker), timeout=30)
        await asyncio.sleep(1.0)  # the last echo dies away; an utterance it started ends
        await wait_for(lambda: len(tap.of(VoiceStopped)) == len(tap.of(VoiceStarted)), 10)
        await asyncio.to_thread(mic.stop)  # the mic reports the echo of what it heard
        await wait_for(lambda: tap.of(EchoCancelled, asker), timeout=5)
    finally:
        mic.stop()
        speaker.stop()
        await tap.stop()
    tap.asker = asker  # type: ignore[attr-defined]
    return tap


async def test_with_cancellation_the_reply_does_not_interrupt_itself(bus, settings, tmp_path):
    ask = line(tmp_path, "ask", "What is the capital of France?")
    tap = await room_run(bus, settings, tmp_path, ["--file", str(ask), "--aec", "speex"])
    asker = tap.asker  # type: ignore[attr-defined]
    assert [v.utterance_id for v in tap.of(VoiceStarted)] == [asker]  # nothing of its own voice
    done = tap.of(PlaybackDone, asker)[0]
    assert not done.interrupted and not tap.of(Interrupt)
    echo = tap.of(EchoCancelled, asker)[0]
    assert echo.canceller == "speex" and echo.echo_ms > 1000
    assert echo.erle_db is not None and echo.erle_db > 6, echo


async def test_without_cancellation_the_room_makes_it_interrupt_itself(bus, settings, tmp_path):
    """The simulation bites: with MIC_AEC=off the reply's own echo is a voice onset."""
    ask = line(tmp_path, "ask", "What is the capital of France?")
    tap = await room_run(bus, settings, tmp_path, ["--file", str(ask), "--aec", "off"])
    asker = tap.asker  # type: ignore[attr-defined]
    own = [v for v in tap.of(VoiceStarted) if v.utterance_id != asker]
    assert own, "the echo was never heard as voice"
    done = tap.of(PlaybackDone, asker)[0]
    assert done.interrupted
    stop = tap.of(Interrupt, asker)[0]
    assert stop.by_utterance_id == own[0].utterance_id
    assert tap.of(EchoCancelled, asker)[0].erle_db in (None, 0.0)


async def test_a_spoken_stop_over_the_reply_still_interrupts_within_150ms(bus, settings, tmp_path):
    ask = line(tmp_path, "ask", "What is the capital of France?")
    stop = line(tmp_path, "stop", "Stop.", lead_s=0.0)
    tap = await room_run(
        bus, settings, tmp_path, ["--file", str(ask), "--then", f"{stop}@2.5", "--aec", "speex"]
    )
    asker = tap.asker  # type: ignore[attr-defined]
    started = tap.of(PlaybackStarted, asker)[0]
    barge = [v for v in tap.of(VoiceStarted) if v.utterance_id != asker]
    assert len(barge) == 1, "one onset: the user's, none of the echo"
    by = barge[0].utterance_id
    interrupt = tap.of(Interrupt, asker)[0]
    assert interrupt.by_utterance_id == by
    assert tap.of(PlaybackDone, asker)[0].interrupted
    # The user's onset, on the capture clock: end of speech minus the speech before it.
    end = next(v for v in tap.of(VoiceStopped, by))
    onset = end.speech_end_ts - (end.speech_end_offset_ms - barge[0].preroll_ms) / 1000
    assert 2.3 < onset - started.ts < 3.0  # spoken where the script said, over the reply
    assert interrupt.ts - onset < 0.150, f"interrupted {1000 * (interrupt.ts - onset):.0f} ms late"
