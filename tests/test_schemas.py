"""The event catalogue: every type round-trips, subjects are obvious, bad bytes are refused."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

import schemas as s

CONV, UTT = "conv-1", "utt-1"


def samples() -> list[s.Event]:
    pcm = b"\x01\x00" * 320
    base = {"endpoint": "device", "conversation_id": CONV, "utterance_id": UTT}
    return [
        s.VoiceStarted(**base, source="q.wav", preroll_ms=200),
        s.MicAudioChunk(**base, seq=3, audio=pcm, offset_ms=60),
        s.TurnDecision(
            **base,
            policy="smart",
            outcome="wait",
            reason="transcript-incomplete",
            score=0.95,
            silence_ms=200,
            audio_ms=1800,
            model_ms=36,
            transcript_tail="a timer for",
        ),
        s.VoiceStopped(**base, chunks=4, duration_ms=80, speech_end_ts=1.0),
        s.TranscriptPartial(**base, text="what is", audio_ms=500),
        s.Transcript(
            **base,
            text="What is the time?",
            language="en",
            words=(s.Word(word="What", start_s=0.0, end_s=0.2, probability=0.9),),
        ),
        s.binding("device", CONV, "file"),
        s.ReplyStarted(**base, language="en", model="smollm2", generation="g1", speculative=True),
        s.ReplyCommitted(**base, generation="g1", transcript_event_id="t1"),
        s.ReplyDiscarded(**base, generation="g0", reason="superseded"),
        s.ReplyToken(**base, text=" It", index=0),
        s.ReplySentence(**base, text="It is noon.", index=0),
        s.ReplyDone(**base, text="It is noon.", sentences=1, tokens=4),
        s.TtsStarted(**base, rate=22050, voice="piper:joe"),
        s.TtsAudioChunk(**base, rate=22050, audio=pcm, sentence_index=0),
        s.SentenceDone(**base, sentence_index=0, text="It is noon.", audio_ms=900),
        s.TtsDone(**base, sentences=1, chunks=1, audio_ms=900),
        s.PlaybackStarted(**base, sink="device"),
        s.PlaybackDone(**base, played_ms=900),
        s.SpeakerReference(**base, audio=pcm, played_at=1.5),
        s.WakeDetected(**base, name="okay_nabu", score=0.98, offset_ms=1530),
        s.EchoCancelled(**base, canceller="speex", erle_db=24.5, echo_ms=900),
        s.Interrupt(**base, by_utterance_id="utt-2"),
        s.ControlError(**base, failed_stage="stt", code="audio-gap", message="chunk 2 missing"),
    ]


def test_catalogue_covers_every_registered_type() -> None:
    assert {e.type for e in samples()} == set(s.event_types())


@pytest.mark.parametrize("event", samples(), ids=lambda e: e.type)
def test_every_event_round_trips_through_the_wire_format(event: s.Event) -> None:
    body = s.encode(event)
    back = s.decode(body)
    assert back == event
    assert type(back) is type(event)
    if event.HAS_PAYLOAD:
        assert back.audio == event.audio  # type: ignore[attr-defined]


def test_audio_travels_as_raw_bytes_not_base64() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes, every byte value
    chunk = s.MicAudioChunk(endpoint="device", conversation_id=CONV, utterance_id=UTT, audio=pcm)
    body = s.encode(chunk)
    head, sep, payload = body.partition(b"\n")
    assert sep and payload == pcm
    assert "audio" not in json.loads(head)
    assert len(body) - len(pcm) < 300  # the envelope is small next to the audio


def test_subject_is_conversation_stage_kind() -> None:
    ev = s.ReplySentence(
        endpoint="device", conversation_id=CONV, utterance_id=UTT, text="Hi.", index=0
    )
    assert s.subject_for(ev) == "voice.device.conv-1.llm.reply-sentence"
    assert s.subject_filter(event_type="mic.audio-chunk") == "voice.*.*.mic.audio-chunk"


def test_events_are_frozen_and_strict() -> None:
    ev = s.Transcript(endpoint="device", conversation_id=CONV, utterance_id=UTT, text="hi")
    with pytest.raises(ValidationError):
        ev.text = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.Transcript(
            endpoint="device", conversation_id=CONV, utterance_id=UTT, text="hi", extra_field=1
        )  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        s.Transcript(endpoint="device", conversation_id="has.dot", utterance_id=UTT, text="hi")


def test_derived_ids_are_deterministic_and_distinct() -> None:
    assert s.derive_id("abc", "token", 1) == s.derive_id("abc", "token", 1)
    assert s.derive_id("abc", "token", 1) != s.derive_id("abc", "token", 2)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "nope.nope"}', "unknown event type"),
        (b'{"type": "stt.transcript", "schema_version": 99}', "unknown schema version"),
        (
            b'{"type": "stt.transcript", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u"}',
            "invalid text",
        ),
        (
            b'{"type": "mic.audio-chunk", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u"}',
            "separator",
        ),
        (
            b'{"type": "mic.audio-chunk", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u"}\n\x00',
            "multiple of the frame size",
        ),
        (
            b'{"type": "mic.audio-chunk", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u",'
            b' "rate": 44100}\n',
            "invalid rate",
        ),
        (
            b'{"type": "mic.voice-started", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u",'
            b' "stream_offset_ms": Infinity}',
            "finite",
        ),
        (  # a corrupted field name (found by the fuzz test): the reason stays one line
            b'{"type": "mic.voice-started", "endpoint": "device", "conversation_id": "c",'
            b' "utterance_id": "u", "schema_versi\\n": 2}',
            "invalid schema_versi\\n: Extra inputs",
        ),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(s.EventDecodeError) as exc:
        s.decode(body)
    assert reason in exc.value.reason
    assert exc.value.reason.isprintable()


def _camel(words: str) -> str:
    return "".join(w.capitalize() for w in words.replace(".", "-").split("-"))


def test_names_match_the_wire() -> None:
    """An event's class, module and type say the same thing: module = stage, class =
    the kind (or stage + kind where the kind alone is ambiguous)."""
    for type_name, cls in s.event_types().items():
        stage, kind = type_name.split(".", 1)
        assert cls.__module__ == f"schemas.{stage}", (type_name, cls.__module__)
        assert cls.__name__ in (_camel(kind), _camel(f"{stage}-{kind}")), (type_name, cls)


def test_schema_version_is_written_from_the_class() -> None:
    ev = s.Transcript(endpoint="device", conversation_id=CONV, utterance_id=UTT, text="hi")
    assert ev.schema_version == s.Transcript.VERSION == 2
    # a producer cannot claim another version: the class says which one it writes
    claimed = s.Transcript(
        endpoint="device", conversation_id=CONV, utterance_id=UTT, text="hi", schema_version=1
    )
    assert claimed.schema_version == 2
    assert json.loads(s.encode(ev))["schema_version"] == 2


def test_a_version_1_event_is_upcast_when_decoded() -> None:
    """v1 predates endpoints: it decodes with the legacy endpoint, as the current version."""
    v1 = b'{"type":"stt.transcript","conversation_id":"c","utterance_id":"u","text":"hi"}'
    ev = s.decode(v1)
    assert isinstance(ev, s.Transcript) and ev.text == "hi"
    assert ev.endpoint == s.LEGACY_ENDPOINT and ev.schema_version == 2
    stopped = s.decode(
        b'{"type":"mic.voice-stopped","schema_version":1,"conversation_id":"c",'
        b'"utterance_id":"u","ts":100.0,"chunks":30,"duration_ms":600.0,'
        b'"speech_end_offset_ms":200.0}'
    )
    # published as the 400 ms hangover ended: speech ended 0.4 s before it
    assert stopped.speech_end_ts == pytest.approx(99.6)  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["nul\x00inside", "lone \ud800 surrogate"])
def test_text_a_database_cannot_store_is_refused_at_the_schema(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"cannot store|unicode"):
        s.Transcript(endpoint="device", conversation_id=CONV, utterance_id=UTT, text=bad)
    body = json.dumps(
        {
            "type": "control.error",
            "endpoint": "device",
            "conversation_id": CONV,
            "utterance_id": UTT,
            "failed_stage": "stt",
            "code": "x",
            "message": bad,
        }
    ).encode()
    with pytest.raises(s.EventDecodeError, match=r"cannot store|surrogate|unicode|not JSON"):
        s.decode(body)
