"""Mic without a bus: sources and VAD end-pointing on real synthesized speech."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from ops.bench.stt import PHRASES, espeak_available, synth_espeak, synth_piper, with_silence
from workers.runtime.endpoint.endpointer import Chunk, EndpointConfig, Endpointer, Started, Stopped
from workers.runtime.endpoint.sources import AudioSourceError, FileSource, MicSource
from workers.runtime.endpoint.vad import VadError, make_vad

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")


def run_endpointer(audio: np.ndarray, vad: str, **cfg: int) -> list:
    ep = Endpointer(make_vad(vad), EndpointConfig(**cfg))
    out = []
    for i in range(0, len(audio), 320):  # 20 ms blocks, as the sources deliver them
        out += ep.feed(audio[i : i + 320])
    return out + ep.flush()


def utterances(segments: list) -> list[tuple[Started, list[Chunk], Stopped]]:
    utts, cur = [], None
    for s in segments:
        if isinstance(s, Started):
            cur = (s, [])
        elif isinstance(s, Chunk):
            cur[1].append(s)
        elif isinstance(s, Stopped):
            utts.append((cur[0], cur[1], s))
    return utts


@pytest.fixture(scope="module")
def three_phrases() -> tuple[np.ndarray, list[tuple[float, float]]]:
    if not espeak_available():
        pytest.skip("apt-get install espeak-ng")
    parts = [synth_espeak(PHRASES[0]), synth_piper(PHRASES[1]), synth_espeak(PHRASES[2])]
    return with_silence(parts, gap_ms=1200, noise=200)


@needs_espeak
@pytest.mark.parametrize(
    "vad",
    [
        "silero",
        pytest.param(
            "webrtc",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("webrtcvad") is None, reason="pip install webrtcvad-wheels"
            ),
        ),
    ],
)
def test_each_phrase_is_one_utterance_with_preroll_and_fixed_chunks(three_phrases, vad) -> None:
    audio, truth = three_phrases
    utts = utterances(run_endpointer(audio, vad, chunk_ms=20, preroll_ms=300, hangover_ms=400))
    assert len(utts) == len(truth)
    for (started, chunks, stopped), (t_start, t_end) in zip(utts, truth, strict=True):
        assert abs(started.stream_offset_ms - t_start) < 150
        # Pre-roll: the utterance's audio begins before the onset, so no syllable is cut.
        assert started.stream_offset_ms - started.preroll_ms <= t_start
        assert started.preroll_ms >= 250
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert {len(c.pcm) for c in chunks} == {640}
        assert stopped.chunks == len(chunks) and stopped.reason == "silence"
        end_in_stream = started.stream_offset_ms - started.preroll_ms + stopped.duration_ms
        assert t_end - 400 < end_in_stream < t_end + 400 + 400
        assert stopped.speech_end_offset_ms <= stopped.duration_ms - 300


@needs_espeak
def test_max_utterance_length_cuts_long_speech() -> None:
    audio, _ = with_silence([synth_espeak(PHRASES[7])], gap_ms=800)
    utts = utterances(run_endpointer(audio, "silero", max_utterance_ms=1000))
    assert utts[0][2].reason == "max-length"
    assert utts[0][2].duration_ms == pytest.approx(1000, abs=40)
    assert len(utts) >= 2  # speech goes on: the next utterance starts at once


@needs_espeak
def test_end_of_stream_closes_an_open_utterance() -> None:
    speech = synth_espeak(PHRASES[0])
    utts = utterances(run_endpointer(speech[: len(speech) // 2], "silero"))
    assert [u[2].reason for u in utts] == ["end-of-stream"]


def test_silence_and_noise_make_no_utterance() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 150, 16000 * 3).astype(np.int16)
    assert run_endpointer(noise, "silero") == []


def test_unknown_vad_is_a_clear_error() -> None:
    with pytest.raises(VadError, match="want silero or webrtc"):
        make_vad("energy")


def _write(path: Path, data: np.ndarray, rate: int, channels: int, width: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def test_file_source_resamples_any_wav_to_16k_mono(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 440 * t) * 0.5 * 2**31).astype("<i4")
    stereo32 = np.stack([tone, tone], axis=1)
    src = FileSource(_write(tmp_path / "s.wav", stereo32, 44100, 2, 4), realtime=False)
    assert src.duration_ms == pytest.approx(1000, abs=1)
    assert np.abs(src.audio).max() > 15000

    async def collect() -> list[np.ndarray]:
        return [b async for b in src.blocks()]

    blocks = asyncio.run(collect())
    assert {len(b) for b in blocks} == {320}
    assert sum(len(b) for b in blocks) == 16000


def test_file_source_real_time_paces_audio() -> None:
    src = FileSource(audio=np.zeros(8000, np.int16), realtime=True)

    async def drain() -> float:
        t0 = time.monotonic()
        async for _ in src.blocks():
            pass
        return time.monotonic() - t0

    assert 0.4 < asyncio.run(drain()) < 0.8


def test_a_stalled_reader_gets_blocks_dated_when_they_were_captured() -> None:
    """The burst that follows a stall is dated on the source's clock, one block after another,
    as a device's ADC clock dates what it buffered (dated on arrival, the simulated room's
    echo and the canceller's reference part ways and the reply leaks through as voice)."""
    src = FileSource(audio=np.zeros(16000, np.int16), realtime=True)

    async def drain() -> tuple[float, list[float]]:
        t0 = time.time()
        stamps = []
        async for _ in src.blocks():
            assert src.captured_at is not None
            stamps.append(src.captured_at)
            if len(stamps) == 10:
                # The process stalls (a blocking call on purpose): 15 blocks are due after it.
                time.sleep(0.3)  # noqa: ASYNC251
        return t0, stamps

    t0, stamps = asyncio.run(drain())
    assert len(stamps) == 50
    assert np.allclose(np.diff(stamps), 0.02, atol=1e-6)
    assert abs(stamps[0] - (t0 + 0.02)) < 0.05


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "not a readable audio file"), (b"RIFFnope", "not a readable")],
)
def test_unreadable_file_is_a_clear_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "x.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioSourceError, match=message):
        FileSource(path)


def test_empty_wav_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.wav", np.zeros(0, np.int16), 16000, 1, 2)
    with pytest.raises(AudioSourceError, match="no audio samples"):
        FileSource(path)


def test_missing_input_device_is_a_clear_error() -> None:
    # This machine has no sound card: the real PortAudio path must say so in one line.
    with pytest.raises(AudioSourceError, match=r"no input device|PortAudio|sounddevice"):
        MicSource("no-such-device-42")


def test_the_end_of_speech_is_where_the_voice_stops_not_where_the_vad_frame_ends() -> None:
    """A loud vowel, a quiet final consonant (-35 dB), then silence: the end of speech is
    the consonant's end, within one 10 ms window, although the VAD's last voiced frame (and
    its hangover) runs on."""
    from workers.runtime.endpoint.endpointer import AcousticEnd

    rate = 16_000
    rng = np.random.default_rng(3)
    vowel = (8000 * np.sin(np.arange(rate * 4 // 10) * 2 * np.pi * 220 / rate)).astype(np.int16)
    consonant = (rng.normal(0, 8000 * 10 ** (-35 / 20), rate * 8 // 100)).astype(np.int16)
    silence = np.zeros(rate // 2, dtype=np.int16)  # the hangover, fed before the decision
    end = AcousticEnd()
    for part in (vowel, consonant, silence):
        for i in range(0, len(part), 512):  # fed in VAD frames, as the end-pointer does
            end.add(part[i : i + 512])
    true_end = len(vowel) + len(consonant)
    vad_end = true_end + 2 * 512  # the VAD held on for two more frames
    assert abs(end.refine(vad_end) - true_end) <= rate // 100
    # never later than the VAD says
    assert end.refine(len(vowel) // 2) <= len(vowel) // 2


# -- smart turn detection ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smart_turn():  # type: ignore[no-untyped-def]
    from workers.runtime.endpoint.turn import SmartTurn

    return SmartTurn()


def paused(first: str, rest: str, pause_ms: int, voice: str = "en-us") -> np.ndarray:
    """One sentence spoken with a pause inside it, then 1.5 s of silence."""
    from ops.bench.stt import trim

    gap = np.zeros(16 * pause_ms, np.int16)
    parts = [trim(synth_espeak(first, voice)), gap, trim(synth_espeak(rest, voice))]
    audio, _ = with_silence([np.concatenate(parts)], gap_ms=1500, lead_ms=500, noise=100)
    return audio


def run_smart(audio: np.ndarray, model, hint: str = "", **cfg) -> list:  # type: ignore[no-untyped-def]
    """Feed 20 ms blocks; once 300 ms of the pause has passed, hand over `hint` as the stt's
    speculative transcript of the speech so far (as the capture does when it arrives)."""
    ep = Endpointer(make_vad("silero"), EndpointConfig(turn="smart", **cfg), model)
    out: list = []
    start_ms, quiet_ms, hinted = None, 0, False
    for i in range(0, len(audio), 320):
        block = audio[i : i + 320]
        for seg in ep.feed(block):
            out.append(seg)
            if isinstance(seg, Started):
                start_ms = seg.stream_offset_ms - seg.preroll_ms
        loud = np.abs(block.astype(np.int32)).max() > 2000
        quiet_ms = 0 if loud else quiet_ms + 20
        if hint and ep.in_utterance and quiet_ms >= 300 and not hinted:
            out += ep.hint(hint, (i + 320) / 16 - start_ms)
            hinted = True
    return out + ep.flush()


@needs_espeak
def test_smart_turn_ends_a_finished_sentence_after_a_short_silence(smart_turn) -> None:
    from workers.runtime.endpoint.endpointer import Decision

    audio, _ = with_silence([synth_espeak("Please turn on the kitchen lights.")], gap_ms=1500)
    segs = run_smart(audio, smart_turn, min_silence_ms=200, transcript_wait_ms=0)
    (utt,) = utterances([s for s in segs if not isinstance(s, Decision)])
    decisions = [s for s in segs if isinstance(s, Decision)]
    assert [(d.outcome, d.reason) for d in decisions] == [("end", "model-complete")]
    (d,) = decisions
    assert d.score is not None and d.score >= 0.5 and d.policy == "smart"
    assert 200 <= d.silence_ms < 300  # the vad policy would wait 400 ms
    assert utt[2].duration_ms - utt[2].speech_end_offset_ms < 400


@needs_espeak
def test_smart_turn_waits_through_a_pause_the_model_calls_unfinished(smart_turn) -> None:
    from workers.runtime.endpoint.endpointer import Decision

    audio = paused("I would like to order", "a large pizza please.", 650)
    segs = run_smart(audio, smart_turn, transcript_wait_ms=0)
    assert len(utterances([s for s in segs if not isinstance(s, Decision)])) == 1
    reasons = [(d.outcome, d.reason) for d in segs if isinstance(d, Decision)]
    assert reasons[0] == ("wait", "model-incomplete") and reasons[-1][0] == "end"
    # The vad policy cuts the same audio at the pause: two turns.
    assert len(utterances(run_endpointer(audio, "silero", hangover_ms=400))) == 2


@needs_espeak
def test_pauses_are_not_turns_set_a_timer_for_ten_minutes(smart_turn) -> None:
    """ "Set a timer for" sounds finished to the audio model; its transcript does not."""
    from workers.runtime.endpoint.endpointer import Decision

    audio = paused("Set a timer for", "ten minutes.", 650)
    segs = run_smart(audio, smart_turn, hint="Set a timer for", transcript_wait_ms=300)
    (utt,) = utterances([s for s in segs if not isinstance(s, Decision)])
    decisions = [d for d in segs if isinstance(d, Decision)]
    assert decisions[0].outcome == "wait"
    assert decisions[0].reason in ("transcript-incomplete", "model-incomplete")
    assert decisions[-1].outcome == "end"
    assert utt[2].duration_ms > 2000  # the whole sentence, both halves


@needs_espeak
def test_a_pause_is_held_while_a_slow_stts_transcript_is_awaited(smart_turn) -> None:
    """On a loaded machine the stt's transcript of "Set a timer for" comes after the pause:
    with the mic's default wait the end-pointer holds the pause for it (the answer needs it
    anyway); a 300 ms wait let intonation alone end the turn in the middle of the sentence."""
    from workers.mic.config import MicSettings
    from workers.runtime.endpoint.endpointer import Decision

    wait = MicSettings(_env_file=None).turn_transcript_wait_ms  # type: ignore[call-arg]
    audio = paused("Set a timer for", "ten minutes.", 650)
    held = run_smart(audio, smart_turn, transcript_wait_ms=wait)
    (utt,) = utterances([s for s in held if not isinstance(s, Decision)])
    assert utt[2].duration_ms > 2000  # the whole sentence
    cut = run_smart(audio, smart_turn, transcript_wait_ms=300)
    assert len(utterances([s for s in cut if not isinstance(s, Decision)])) == 2


@needs_espeak
def test_the_model_is_asked_ahead_of_the_pause_and_its_answer_decides_it(smart_turn) -> None:
    """Deferred scoring (the capture's way): a ScoreRequest comes before the min silence,
    nothing is decided without its answer, and the answer decides the pause at once."""
    from workers.runtime.endpoint.endpointer import Decision, ScoreRequest

    audio, _ = with_silence([synth_espeak("Please turn on the kitchen lights.")], gap_ms=1500)
    cfg = dict(turn="smart", transcript_wait_ms=0, min_silence_ms=200)
    inline = Endpointer(make_vad("silero"), EndpointConfig(**cfg), smart_turn)
    ep = Endpointer(
        make_vad("silero"),
        EndpointConfig(**cfg, score_ahead_ms=128),
        smart_turn,
    )
    ep.defer_scoring = True
    decided_at = asked_at = None
    req: ScoreRequest | None = None
    for i in range(0, len(audio), 320):
        block = audio[i : i + 320]
        if decided_at is None and any(isinstance(s, Decision) for s in inline.feed(block)):
            decided_at = i + 320
        for seg in ep.feed(block):
            assert not isinstance(seg, Decision | Stopped)  # not without the model's answer
            if isinstance(seg, ScoreRequest):
                req, asked_at = seg, i + 320
        if decided_at is not None and i + 320 >= decided_at + 16 * 300:
            break
    assert req is not None and asked_at is not None and decided_at is not None
    # Asked about 128 ms of silence before the in-line end-pointer asked (and decided).
    assert 16 * 90 <= decided_at - asked_at <= 16 * 170
    assert ep.in_utterance and ep.awaiting_score
    # The audio asked about is as long as the in-line one's: the silence still to come is
    # made up from the quiet heard, and the model judges it alike.
    score = smart_turn.score(req.audio)
    assert score >= 0.5
    assert ep.scored(req.token + 1, 0.0) == []  # an answer about another pause: dropped
    segs = ep.scored(req.token, score, 42.0)
    (d,) = [s for s in segs if isinstance(s, Decision)]
    assert (d.outcome, d.reason, d.model_ms) == ("end", "model-complete", 42.0)
    assert isinstance(segs[-1], Stopped) and not ep.in_utterance
    assert ep.scored(req.token, score) == []


@needs_espeak
def test_a_pause_that_waits_only_for_the_transcript_ends_when_it_comes(smart_turn) -> None:
    """The model says complete: the turn ends when the stt's transcript arrives, not at the
    next audio block."""
    from workers.runtime.endpoint.endpointer import Decision

    audio, [(_, end_ms)] = with_silence(
        [synth_espeak("Please turn on the kitchen lights.")], gap_ms=1500
    )
    ep = Endpointer(
        make_vad("silero"), EndpointConfig(turn="smart", transcript_wait_ms=1000), smart_turn
    )
    start = None
    heard_ms = end_ms + 500  # the speech and 500 ms of its pause
    for i in range(0, int(16 * heard_ms), 320):
        for seg in ep.feed(audio[i : i + 320]):
            assert not isinstance(seg, Decision | Stopped)
            if isinstance(seg, Started):
                start = seg.stream_offset_ms - seg.preroll_ms
    assert ep.in_utterance and start is not None
    segs = ep.hint("Please turn on the kitchen lights.", heard_ms - start)
    (d,) = [s for s in segs if isinstance(s, Decision)]
    assert (d.outcome, d.reason) == ("end", "model-complete")
    assert d.transcript_tail == "on the kitchen lights." and isinstance(segs[-1], Stopped)


@needs_espeak
def test_speech_resuming_soon_after_a_turn_ended_continues_that_turn() -> None:
    """A 650 ms pause the vad policy cuts (400 ms hangover): the speech after it resumes the
    cut turn, and its utterance holds the whole sentence from the same start."""
    audio = paused("Set a timer for", "ten minutes.", 650)
    (first, second) = utterances(run_endpointer(audio, "silero", hangover_ms=400, resume_ms=800))
    assert not first[0].resumes and second[0].resumes
    # It starts where the cut one did; its onset is the new speech's, after the pause.
    start_ms = first[0].stream_offset_ms - first[0].preroll_ms
    assert second[0].stream_offset_ms - second[0].preroll_ms == pytest.approx(start_ms)
    assert second[0].stream_offset_ms > first[0].stream_offset_ms + first[2].speech_end_offset_ms
    whole = b"".join(c.pcm for c in second[1][:-1])  # the last chunk is padded
    cut = b"".join(c.pcm for c in first[1][:-1])
    assert whole.startswith(cut)
    # ... and its end of speech is the sentence's: after the pause and "ten minutes".
    assert second[2].speech_end_offset_ms > first[2].speech_end_offset_ms + 650 + 500
    # The stream offsets agree: the whole sentence is where the audio has it.
    start = int(16 * (first[0].stream_offset_ms - first[0].preroll_ms))
    stream = audio[start : start + len(whole) // 2].tobytes()
    assert whole[: len(stream)] == stream
    # Without resumption, the same audio is two turns.
    plain = utterances(run_endpointer(audio, "silero", hangover_ms=400))
    assert len(plain) == 2 and not any(u[0].resumes for u in plain)


@needs_espeak
def test_a_question_asked_after_a_longer_silence_is_a_turn_of_its_own(three_phrases) -> None:
    audio, truth = three_phrases  # 1.2 s between the phrases
    utts = utterances(run_endpointer(audio, "silero", hangover_ms=400, resume_ms=800))
    assert len(utts) == len(truth)
    assert not any(u[0].resumes for u in utts)


def test_transcript_endings_that_cannot_end_a_sentence() -> None:
    from workers.runtime.endpoint.turn import ends_unfinished

    for text in ("Set a timer for", "Set a timer for...", "Add milk and", "Call my", "the"):
        assert ends_unfinished(text), text
    for text in ("Set a timer for ten minutes.", "Open the garage door please.", "I like this", ""):
        assert not ends_unfinished(text), text


def test_smart_turn_without_its_model_is_a_clear_error(monkeypatch) -> None:
    from workers.runtime.endpoint import turn
    from workers.runtime.models import ModelNotFoundError

    monkeypatch.setattr(turn, "SMART_TURN_DIST", "no-such-dist-for-smart-turn")
    with pytest.raises(ModelNotFoundError, match="pipecat-ai"):
        turn.SmartTurn()
    with pytest.raises(ValueError, match="smart or vad"):
        turn.make_turn_model("fancy")
    with pytest.raises(ValueError, match="end-of-turn model"):
        Endpointer(make_vad("silero"), EndpointConfig(turn="smart"))
