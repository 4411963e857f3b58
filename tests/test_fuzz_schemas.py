"""Property: every body either decodes to a valid event or raises EventDecodeError.

No other exception may escape `schemas.decode`: the bus turns EventDecodeError into a
dead letter with its reason, anything else would crash the consumer loop.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas as s

TYPES = sorted(s.event_types())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(body: bytes) -> s.Event | None:
    try:
        return s.decode(body)
    except s.EventDecodeError as exc:
        assert exc.reason and "\n" not in exc.reason[:200]
        return None


def valid_events() -> st.SearchStrategy[s.Event]:
    tok = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
    pcm = st.integers(0, 64).map(lambda n: b"\x01\x00" * n)
    # Text a database can store (NUL and lone surrogates are refused at the schema).
    text = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
    base = {
        "endpoint": tok,
        "conversation_id": tok,
        "utterance_id": tok,
        "seq": st.integers(0, 10_000),
        # Explicit: the defaults (random id, clock) would make the encoding vary per run.
        "event_id": tok,
        "ts": st.floats(0, 2e9),
    }
    return st.one_of(
        st.builds(s.VoiceStarted, **base),
        st.builds(s.MicAudioChunk, **base, audio=pcm),
        st.builds(
            s.VoiceStopped,
            **base,
            chunks=st.integers(0, 99),
            duration_ms=st.just(1.0),
            speech_end_ts=st.floats(0, 2e9),
        ),
        st.builds(s.Transcript, **base, text=st.text(text, max_size=50)),
        st.builds(
            s.ReplySentence, **base, text=st.text(text, min_size=1, max_size=50), index=st.just(0)
        ),
        st.builds(
            s.TtsAudioChunk,
            **base,
            audio=pcm,
            rate=st.integers(1, 48_000),
            sentence_index=st.just(0),
        ),
        st.builds(s.Interrupt, **base),
    )


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_escape_as_another_exception(body: bytes) -> None:
    decodes_or_refuses(body)


@FUZZ
@given(valid_events())
def test_every_valid_event_round_trips(event: s.Event) -> None:
    back = s.decode(s.encode(event))
    assert back == event
    if event.HAS_PAYLOAD:
        assert back.audio == event.audio  # type: ignore[attr-defined]


@FUZZ
@given(valid_events(), st.data())
def test_truncated_or_corrupted_frames_are_refused_or_still_valid(
    event: s.Event, data: st.DataObject
) -> None:
    body = s.encode(event)
    cut = data.draw(st.integers(0, len(body)))
    decodes_or_refuses(body[:cut])
    pos = data.draw(st.integers(0, max(0, len(body) - 1)))
    flipped = bytearray(body)
    if flipped:
        flipped[pos] ^= data.draw(st.integers(1, 255))
    decodes_or_refuses(bytes(flipped))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@FUZZ
@given(valid_events(), st.sampled_from([*TYPES, "type"]), st.data())
def test_wrong_field_values_and_schema_versions_are_refused_with_a_reason(
    event: s.Event, field: str, data: st.DataObject
) -> None:
    head, sep, payload = s.encode(event).partition(b"\n")
    doc = json.loads(head)
    key = data.draw(st.sampled_from([*doc, "schema_version", "type", "extra_field"]))
    doc[key] = data.draw(JSON_VALUES | st.integers(-5, 1_000_000) | st.sampled_from(TYPES))
    body = json.dumps(doc, allow_nan=True).encode() + sep + payload
    decoded = decodes_or_refuses(body)
    if decoded is not None:
        assert decoded.schema_version <= type(decoded).VERSION
        for name in ("seq", "chunks", "duration_ms", "rate", "offset_ms"):
            v = getattr(decoded, name, 0)
            assert not (isinstance(v, float) and math.isnan(v)) and v >= 0


def test_unknown_schema_version_and_type_are_named_in_the_reason() -> None:
    ev = s.Transcript(endpoint="device", conversation_id="c", utterance_id="u", text="x")
    doc = json.loads(s.encode(ev))
    doc["schema_version"] = 99
    try:
        s.decode(json.dumps(doc).encode())
    except s.EventDecodeError as exc:
        assert "unknown schema version 99" in exc.reason
    doc["type"] = "stt.telepathy"
    try:
        s.decode(json.dumps(doc).encode())
    except s.EventDecodeError as exc:
        assert "unknown event type 'stt.telepathy'" in exc.reason


def test_oversized_odd_and_wrong_rate_audio_is_refused() -> None:
    chunk = s.MicAudioChunk(
        endpoint="device", conversation_id="c", utterance_id="u", audio=b"\0\0" * 10
    )
    head = s.encode(chunk).partition(b"\n")[0]
    for body, reason in (
        (head + b"\n" + b"\0" * (s.MAX_PAYLOAD_BYTES + 2), "too large"),
        (head + b"\n" + b"\0" * 3, "not a multiple of the frame size"),
        (head.replace(b'"rate":16000', b'"rate":8000') + b"\n\0\0", "invalid rate"),
        (head, "missing binary payload separator"),
    ):
        try:
            s.decode(body)
        except s.EventDecodeError as exc:
            assert reason in exc.reason, exc.reason
        else:
            raise AssertionError(f"accepted: {reason}")


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    decodes_or_refuses(b"[" * 100_000)
    decodes_or_refuses(b'{"type":"stt.transcript","text":' + b"[" * 50_000)
