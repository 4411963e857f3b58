"""`just replay ID --listen` and the trace export on a hand-written event log (no workers):
the reply is heard only as far as it was played, turns stay in order, ids come from the log."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

import schemas as s
from workers.cli import replay, trace
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.otlp_receiver import jaeger_json

TTS_RATE = 22_050
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def tone(rate: int, seconds: float, level: int) -> bytes:
    return np.full(int(rate * seconds), level, dtype=np.int16).tobytes()


def spoken_turn(
    conv: str, t0: float, user_level: int, reply_level: int, interrupted: bool
) -> list[s.Event]:
    """A turn whose user audio and reply audio have recognisable constant levels."""
    u = s.new_id()
    audio = tone(s.PIPELINE_RATE, 0.1, user_level)
    ev: list[s.Event] = [
        s.VoiceStarted(endpoint="device", conversation_id=conv, utterance_id=u, ts=t0)
    ]
    ev += [
        s.MicAudioChunk(
            endpoint="device",
            conversation_id=conv,
            utterance_id=u,
            seq=i,
            audio=audio,
            ts=t0 + 0.1 * i,
        )
        for i in range(5)
    ]
    ev.append(
        s.VoiceStopped(
            endpoint="device",
            conversation_id=conv,
            utterance_id=u,
            chunks=5,
            duration_ms=500,
            ts=t0 + 0.5,
            speech_end_ts=t0 + 0.5,
        )
    )
    ev.append(
        s.Transcript(
            endpoint="device", conversation_id=conv, utterance_id=u, text="hello", ts=t0 + 0.8
        )
    )
    reply = tone(TTS_RATE, 0.5, reply_level)
    ev += [
        s.TtsAudioChunk(
            endpoint="device",
            conversation_id=conv,
            utterance_id=u,
            seq=i,
            audio=reply,
            rate=TTS_RATE,
            sentence_index=0,
            ts=t0 + 1.0 + 0.01 * i,
        )
        for i in range(4)  # 2 s synthesized
    ]
    ev.append(
        s.PlaybackStarted(endpoint="device", conversation_id=conv, utterance_id=u, ts=t0 + 1.1)
    )
    ev.append(
        s.PlaybackDone(
            endpoint="device",
            conversation_id=conv,
            utterance_id=u,
            played_ms=700.0 if interrupted else 2000.0,
            interrupted=interrupted,
            ts=t0 + 3.1,
        )
    )
    return ev


def sounding(pcm: np.ndarray, rate: int) -> list[np.ndarray]:
    """The non-silent stretches of pcm longer than 50 ms, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (pcm != 0).astype(np.int8), [0]])))
    return [pcm[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a > rate // 20]


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    lg = EventLog(f"sqlite:///{(tmp_path / 'log.db').as_posix()}")
    yield lg
    lg.close()


def test_listen_puts_both_sides_in_order_and_cuts_an_interrupted_reply(
    log: EventLog, tmp_path: Path
) -> None:
    conv = "c-listen"
    events = spoken_turn(conv, 1000.0, 1000, 2000, interrupted=True) + spoken_turn(
        conv, 1010.0, 3000, 4000, interrupted=False
    )
    log.append([Record.of(e, TRACEPARENT) for e in events])
    path, seconds = replay.render(log, conv, tmp_path / "out.wav")
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert rate == TTS_RATE  # the highest rate of the parts
    # user 0.5 s, reply heard 0.7 s (of 2 s), user 0.5 s, reply 2 s; a gap after each.
    assert seconds == pytest.approx(0.5 + 0.7 + 0.5 + 2.0 + 4 * replay.GAP_S, abs=0.01)
    medians = [float(np.median(seg)) for seg in sounding(pcm, rate)]
    assert medians == pytest.approx([1000, 2000, 3000, 4000], rel=0.02)
    heard = np.count_nonzero(pcm == 2000) / rate
    assert heard == pytest.approx(0.7, abs=0.01)


def test_listen_without_audio_is_a_clear_error(log: EventLog, tmp_path: Path) -> None:
    log.append(
        [
            Record.of(
                s.Transcript(
                    endpoint="device", conversation_id="typed", utterance_id="u1", text="hi"
                )
            )
        ]
    )
    with pytest.raises(replay.ReplayError, match="no recorded audio"):
        replay.render(log, "typed", tmp_path / "x.wav")


def test_jaeger_export_is_rebuilt_from_the_events_under_the_mics_root_span(
    log: EventLog,
) -> None:
    conv = "c-trace"
    log.append([Record.of(e, TRACEPARENT) for e in spoken_turn(conv, 1000.0, 5, 6, False)])
    (turn,) = log.turns(conv)
    spans = trace.reconstructed_spans(log, turn)
    (doc,) = jaeger_json(spans)["data"]
    assert doc["traceID"] == "0af7651916cd43dd8448eb211c80319c"
    by_op = {sp["operationName"]: sp for sp in doc["spans"]}
    assert by_op["utterance"]["spanID"] == "b7ad6b7169203331"
    assert by_op["utterance"]["references"] == []
    for name in ("stt.final", "speaker.playback"):
        (ref,) = by_op[name]["references"]
        assert ref["spanID"] == "b7ad6b7169203331"
    # stt: end of speech (t0+0.5) to transcript (t0+0.8), microseconds.
    assert by_op["stt.final"]["startTime"] == 1000_500_000
    assert by_op["stt.final"]["duration"] == pytest.approx(300_000, abs=1)
    lines = trace.waterfall(turn, 1)
    assert all(len(line) <= trace.WIDTH for line in lines)
