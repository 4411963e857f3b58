"""The capture on a real bus: the end-of-turn model runs off the event loop, ahead of the
pause, and decides each pause as the model run in line would."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ops.bench.stt import espeak_available, synth_espeak, trim, with_silence
from schemas import TurnDecision, VoiceStopped, new_id
from workers.runtime.bus import Bus
from workers.runtime.endpoint.capture import Capture
from workers.runtime.endpoint.endpointer import (
    SMART_SCORE_AHEAD_MS,
    Decision,
    EndpointConfig,
    Endpointer,
)
from workers.runtime.endpoint.vad import make_vad

from .test_stt_stream import read_stream

pytestmark = pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")

CONFIG = EndpointConfig(turn="smart", transcript_wait_ms=0, score_ahead_ms=SMART_SCORE_AHEAD_MS)


class ThreadNoting:
    """The real Smart Turn model, noting the thread each call runs on."""

    name = "smart-turn-v3.2"

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.threads: set[int] = set()

    def score(self, audio: np.ndarray) -> float:
        self.threads.add(threading.get_ident())
        return self.model.score(audio)


@pytest.fixture(scope="module")
def smart_turn():  # type: ignore[no-untyped-def]
    from workers.runtime.endpoint.turn import SmartTurn

    return SmartTurn()


@pytest.fixture(scope="module")
def paused_sentence() -> np.ndarray:
    """A sentence with a pause the model calls unfinished, then the rest of it."""
    gap = np.zeros(16 * 650, np.int16)
    speech = [trim(synth_espeak("I would like to order")), gap, trim(synth_espeak("a pizza."))]
    audio, _ = with_silence([np.concatenate(speech)], gap_ms=1500, lead_ms=500, noise=100)
    return audio


async def capture_decisions(bus: Bus, audio: np.ndarray, model, pace: float) -> list:  # type: ignore[no-untyped-def]
    conv = new_id()
    capture = Capture(
        bus, Endpointer(make_vad("silero"), CONFIG, model), "device", conv, "test", "t.wav"
    )
    await capture.bind("file")
    for i in range(0, len(audio), 320):
        await capture.feed(audio[i : i + 320])
        if pace:
            await asyncio.sleep(pace)
    await capture.close()
    events = [e for e, _ in await read_stream(bus, f"voice.*.{conv}.>")]
    assert sum(isinstance(e, VoiceStopped) for e in events) == 1
    return [e for e in events if isinstance(e, TurnDecision)]


async def test_audio_faster_than_the_model_gets_the_decisions_of_the_model_in_line(
    bus: Bus, smart_turn, paused_sentence
) -> None:
    """Fed as fast as it goes (a file, not paced), the capture holds the audio at each
    pause until the model has answered: the same decisions, at the same silences, with the
    same scores as the end-pointer running the model inside `feed`."""
    inline = Endpointer(make_vad("silero"), CONFIG, smart_turn)
    want = []
    for i in range(0, len(paused_sentence), 320):
        want += [s for s in inline.feed(paused_sentence[i : i + 320]) if isinstance(s, Decision)]
    assert want[0].outcome == "wait" and want[-1].outcome == "end"
    model = ThreadNoting(smart_turn)
    got = await capture_decisions(bus, paused_sentence, model, pace=0)
    assert [(d.outcome, d.reason, d.silence_ms) for d in got] == [
        (d.outcome, d.reason, d.silence_ms) for d in want
    ]
    assert [d.score for d in got] == pytest.approx([d.score for d in want])
    assert threading.get_ident() not in model.threads  # never on the event loop's thread


async def test_at_real_time_the_pause_is_decided_when_its_silence_allows(
    bus: Bus, smart_turn
) -> None:
    """At the pace of a microphone the model's answer is ready when the min silence is
    reached: the turn ends on the first frame it may, and the model ran off the loop."""
    audio, _ = with_silence([synth_espeak("Turn on the lights.")], gap_ms=800, lead_ms=300)
    model = ThreadNoting(smart_turn)
    got = await capture_decisions(bus, audio, model, pace=0.02)
    (d,) = got
    assert (d.outcome, d.reason) == ("end", "model-complete")
    frame_ms = 32
    assert CONFIG.min_silence_ms <= d.silence_ms < CONFIG.min_silence_ms + frame_ms
    assert model.threads and threading.get_ident() not in model.threads
