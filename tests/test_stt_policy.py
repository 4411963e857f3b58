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
    u.quiet_decode_done = True
    assert u.want_decode() in (None, "partial")


def test_no_partial_is_started_on_quiet_audio() -> None:
    """A partial while the speech goes quiet would hold the decoder when the quiet decode
    (the one the answer waits for) is due; a partial of silence adds no words."""
    assert _utterance(1000, 0).want_decode() == "partial"
    assert _utterance(1000, 40).want_decode() is None
    u = _utterance(1000, 600)
    u.quiet_decode_done = True
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
