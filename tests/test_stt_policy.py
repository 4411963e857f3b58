"""The streaming policy on its own: stable prefixes, loop cutting, when a decode is reused."""

from __future__ import annotations

import numpy as np

from workers.stt.backends import Decoded, cut_repeat
from workers.stt.streaming import Coverage, UtteranceAudio, stable_prefix


def test_stable_prefix_is_word_aligned_common_prefix() -> None:
    assert stable_prefix("", "Please") == 0
    assert stable_prefix("Please turn on the", "Please turn on the kitchen") == 18
    assert stable_prefix("Please turn on the key", "Please turn on the kitchen") == 18
    assert stable_prefix("Please turn", "Please turned") == 6


def test_a_decode_that_restarts_the_phrase_is_cut() -> None:
    assert cut_repeat([9, 1, 2, 3, 4, 8, 1, 2, 3]) == [9, 1, 2, 3, 4]
    assert cut_repeat([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
    assert cut_repeat([1, 2, 1, 2]) == [1, 2, 1, 2]  # too short to call it a loop


def _utterance(speech_ms: int, silence_ms: int) -> UtteranceAudio:
    u = UtteranceAudio(partial_interval_ms=600)
    rng = np.random.default_rng(0)
    for _ in range(speech_ms // 20):
        u.add((rng.normal(0, 3000, 320)).astype("<i2").tobytes())
    for _ in range(silence_ms // 20):
        u.add(np.zeros(320, "<i2").tobytes())
    return u


def test_trailing_quiet_asks_for_a_speculative_final_once() -> None:
    u = _utterance(1000, 100)
    assert u.want_decode() != "quiet"
    u = _utterance(1000, 200)
    assert u.want_decode() == "quiet"
    u.decode_started(quiet=True)
    assert u.want_decode() in (None, "partial")


def _add(u: UtteranceAudio, ms: int, level: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(ms // 20):
        u.add(rng.normal(0, level, 320).clip(-32768, 32767).astype("<i2").tobytes())


def test_a_soft_last_sound_is_speech_not_quiet() -> None:
    """ "France?" ends in an "s" at 2-5 % of the vowels' level: a decode started in it has
    not heard the last word, and the end-pointer waits for one that has."""
    u = UtteranceAudio(partial_interval_ms=0)
    _add(u, 300, 30)  # pre-roll: a quiet room
    _add(u, 1000, 3000)
    _add(u, 200, 120)  # the "s", 4 % of the peak, longer than QUIET_MS
    assert u.want_decode() is None
    _add(u, 160, 30)
    assert u.want_decode() == "quiet"


def test_quiet_is_judged_against_the_rooms_noise() -> None:
    u = UtteranceAudio(partial_interval_ms=0)
    _add(u, 300, 90)  # a fan at 3 % of the speech
    _add(u, 1000, 3000)
    _add(u, 200, 90)
    assert u.want_decode() == "quiet"  # the fan is not speech
    v = UtteranceAudio(partial_interval_ms=0)
    _add(v, 300, 600)  # a room as loud as a fifth of the speech: nothing is quiet in it
    _add(v, 1000, 3000)
    _add(v, 400, 600)
    assert v.want_decode() is None


def test_a_long_quiet_gets_one_confirming_decode() -> None:
    """A decode at the first quiet may have been cut in a soft last sound that the room's
    noise hid: once the quiet has gone on, the utterance is decoded once more, and no more."""
    u = _utterance(1000, 200)
    assert u.want_decode() == "quiet"
    u.decode_started(quiet=True)
    _add(u, 300, 0)
    assert u.want_decode() is None
    _add(u, 20, 0)
    assert u.want_decode() == "quiet"
    u.decode_started(quiet=True)
    _add(u, 2000, 0)
    assert u.want_decode() is None
    _add(u, 200, 3000)  # speech again: its end gets its own quiet decode
    _add(u, 200, 0)
    assert u.want_decode() == "quiet"


def test_no_partial_is_started_on_quiet_audio() -> None:
    """A partial while the speech goes quiet would hold the decoder when the quiet decode
    (the one the answer waits for) is due; a partial of silence adds no words."""
    assert _utterance(1000, 0).want_decode() == "partial"
    assert _utterance(1000, 40).want_decode() is None
    u = _utterance(1000, 600)
    u.decode_started(quiet=True)
    u.decode_started(quiet=True)  # and its confirmation
    u.last_decode_at = 16000 * 1160 // 1000  # the quiet decode; 440 ms of silence since
    u.add(np.zeros(16000 * 200 // 1000, "<i2").tobytes())
    assert u.want_decode() is None


def test_final_reuses_only_a_final_quality_decode_that_saw_the_speech_end() -> None:
    u = _utterance(1000, 400)
    d = Decoded(text="hi", audio_ms=1200, decode_ms=100)
    u.best = Coverage(d, samples=16000 * 12 // 10, final_quality=False)
    assert u.reusable(speech_end_ms=1000) is None
    u.best = Coverage(d, samples=16000 * 12 // 10, final_quality=True)
    assert u.reusable(speech_end_ms=1000) is d
    assert u.reusable(speech_end_ms=1300) is None


def test_a_decode_made_at_a_pause_is_not_the_final_once_the_user_went_on() -> None:
    """The final is the whole utterance: speech after the decoded part means decode again,
    even when the end-pointer's speech end looks covered."""
    u = _utterance(1000, 400)
    d = Decoded(text="Set a timer for", audio_ms=1200, decode_ms=100)
    u.best = Coverage(d, samples=16000 * 12 // 10, final_quality=True)
    assert u.reusable(speech_end_ms=1000) is d
    rng = np.random.default_rng(1)
    for _ in range(10):  # "ten minutes"
        u.add((rng.normal(0, 3000, 320)).astype("<i2").tobytes())
    assert u.grew_after(16000 * 12 // 10)
    assert u.reusable(speech_end_ms=1000) is None
    # Cut right at the speech end, before the last word could be heard whole: not reused.
    v = _utterance(1000, 400)
    v.best = Coverage(d, samples=16000 * 1020 // 1000, final_quality=True)
    assert v.reusable(speech_end_ms=1000) is None


def test_a_late_quiet_decode_hears_the_same_quiet_as_an_early_one() -> None:
    """On a busy machine the quiet decode may start long after the quiet began (the decoder
    was still on a partial): it still decodes the speech and QUIET_MS of quiet, and its
    confirmation QUIET_MS + CONFIRM_MS; a longer silence makes Whisper add words that were
    not said ("Set a timer for it")."""
    from workers.stt.streaming import CONFIRM_MS, QUIET_MS

    speech = 16000 * 1000 // 1000
    on_time = _utterance(1000, 200)
    assert on_time.decode_started(quiet=True) == speech + 16 * QUIET_MS
    late = _utterance(1000, 900)
    assert late.decode_started(quiet=True) == speech + 16 * QUIET_MS
    assert late.decode_started(quiet=True) == speech + 16 * (QUIET_MS + CONFIRM_MS)
    assert late.decode_started(quiet=False) == late.samples  # a partial hears it all


async def test_a_quiet_decode_goes_before_partials_waiting_for_the_decoder() -> None:
    """The gate runs one decode at a time: a partial that would run while a final or a
    quiet decode waits is skipped."""
    import asyncio
    import threading

    from workers.stt.worker import DecodeGate

    gate, release, ran = DecodeGate(), threading.Event(), []

    def decode(name: str):  # type: ignore[no-untyped-def]
        def run(cancel: threading.Event) -> str:
            if name == "busy":
                release.wait(5)
            ran.append(name)
            return name

        return run

    busy = asyncio.create_task(gate.run(decode("busy"), urgent=False))
    await asyncio.sleep(0.05)
    partial = asyncio.create_task(gate.run(decode("partial"), urgent=False))
    quiet = asyncio.create_task(gate.run(decode("quiet"), urgent=True))
    await asyncio.sleep(0.05)
    release.set()
    assert await busy == "busy" and await quiet == "quiet"
    assert await partial is None
    assert ran == ["busy", "quiet"]
    gate.close()


async def test_a_partial_on_the_decoder_gives_way_to_a_quiet_decode() -> None:
    """A partial already decoding is told to stop when an urgent decode comes; a decode
    that stops (DecodeCancelled, at its next stage) counts as skipped."""
    import asyncio
    import threading

    from workers.stt.backends import DecodeCancelled
    from workers.stt.worker import DecodeGate

    gate, ran = DecodeGate(), []

    def partial(cancel: threading.Event) -> str:
        assert cancel.wait(5), "never told to stop"
        ran.append("partial stopped")
        raise DecodeCancelled

    def quiet(cancel: threading.Event) -> str:
        ran.append("quiet")
        return "quiet"

    running = asyncio.create_task(gate.run(partial, urgent=False))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert await gate.run(quiet, urgent=True) == "quiet"  # type: ignore[arg-type]
    assert await running is None
    assert ran == ["partial stopped", "quiet"] and gate.cancelled == 1
    # An urgent decode is never stopped for another urgent one.
    assert await gate.run(quiet, urgent=True) == "quiet"  # type: ignore[arg-type]
    gate.close()
