"""Wake word: only speech after "okay nabu" is a turn, the phrase is not in it, and after a
reply the follow-up window listens without it.

Real parts, each worker in its own process: the mic (file source, MIC_WAKE_WORD=okay_nabu
with the model shipped in pymicro-wakeword, Silero VAD), the stt (Whisper tiny) and, for the
follow-up, the speaker (its reference ends the reply for the mic) in the simulated room.
The test stands in for the llm and tts. Speech is espeak-ng's: its "okay nabu" in the en-us
voice at 130 words per minute is what the okay_nabu model detects (score above its cutoff);
espeak's "hey jarvis" is never detected in any voice tried (en, en-us, +m3, +f2), so the
test uses okay_nabu.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.bench.stt import espeak_available, synth_espeak, synth_piper
from schemas import PlaybackDone, Transcript, VoiceStarted, VoiceStopped, WakeDetected
from tests.conftest import wait_for
from tests.support import Tap
from tests.test_room_aec import REPLY, speak_reply
from workers.runtime.audio import write_wav
from workers.runtime.procs import WorkerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng"),
]
RATE = 16_000
QUESTION = "What is the capital of France?"


def wav(folder, name: str, *parts: np.ndarray):  # type: ignore[no-untyped-def]
    gap = np.zeros(int(0.6 * RATE), np.int16)
    pcm = np.concatenate([gap] + [x for p in parts for x in (p, gap)])
    return write_wav(folder / f"{name}.wav", pcm.tobytes(), RATE)


def wake_phrase() -> np.ndarray:
    return synth_espeak("okay nabu", voice="en-us", wpm=130)


async def test_a_woken_question_is_one_turn_without_the_phrase(bus, settings, tmp_path):
    f = wav(tmp_path, "woken", wake_phrase(), synth_espeak(QUESTION))
    tap = await Tap().start(bus)
    logs = tmp_path / "logs"
    stt = WorkerProcess("stt", settings, log_file=logs / "stt.log").start()
    mic = WorkerProcess(
        "mic",
        settings,
        args=["--file", str(f), "--wake-word", "okay_nabu"],
        log_file=logs / "mic.log",
    )
    try:
        await stt.wait_consumer(bus, timeout=120)
        mic.start()
        wake = (await wait_for(lambda: tap.of(WakeDetected), timeout=30))[0]
        text = (await wait_for(lambda: tap.of(Transcript), timeout=30))[0].text
        mic.proc.wait(30)
    finally:
        mic.stop()
        stt.stop()
        await tap.stop()
    assert wake.name == "okay_nabu" and wake.score > 0.5
    assert len(tap.of(VoiceStarted)) == 1
    words = text.lower()
    assert "capital" in words and "france" in words, text
    assert "okay" not in words and "nabu" not in words and "boo" not in words, text


async def test_the_same_question_without_the_phrase_is_no_turn(bus, settings, tmp_path):
    f = wav(tmp_path, "unwoken", synth_espeak(QUESTION))
    tap = await Tap().start(bus)
    mic = WorkerProcess(
        "mic",
        settings,
        args=["--file", str(f), "--wake-word", "okay_nabu"],
        log_file=tmp_path / "mic.log",
    ).start()
    try:
        assert mic.proc.wait(60) == 0
    finally:
        mic.stop()
        await tap.stop()
    assert not tap.of(VoiceStarted) and not tap.of(WakeDetected)


async def test_a_follow_up_inside_the_window_needs_no_phrase(bus, settings, tmp_path):
    first = wav(tmp_path, "first", wake_phrase(), synth_espeak(QUESTION))
    follow = wav(tmp_path, "follow", synth_espeak("And what about Germany?"))
    tap = await Tap().start(bus)
    logs = tmp_path / "logs"
    speaker = WorkerProcess("speaker", settings, log_file=logs / "speaker.log").start()
    mic = WorkerProcess(
        "mic",
        settings,
        args=[
            "--file",
            str(first),
            "--then",
            str(follow),
            "--room",
            "loudspeaker",
            "--wake-word",
            "okay_nabu",
            "--conversation",
            "wakefollow",
        ],
        log_file=logs / "mic.log",
    )
    try:
        await speaker.wait_consumer(bus)
        mic.start()
        asked = (await wait_for(lambda: tap.of(VoiceStopped), timeout=30))[0].utterance_id
        await speak_reply(bus, "wakefollow", asked, synth_piper(REPLY))
        await wait_for(lambda: tap.of(PlaybackDone, asked), timeout=30)
        await wait_for(lambda: len(tap.of(VoiceStarted)) >= 2, timeout=20)
    finally:
        mic.stop()
        speaker.stop()
        await tap.stop()
    assert len(tap.of(WakeDetected)) == 1  # said once, before the first question only
    assert not tap.of(PlaybackDone, asked)[0].interrupted
