"""A real spoken turn through every worker process, exported to a local OTLP/HTTP receiver:
one trace per turn across processes, and the CLI views of it (trace, conversations, replay).

One module-scoped turn feeds all tests here (model loading dominates: ~20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import schemas as s
from workers.cli import conversations, replay, trace
from workers.cli.demo import parser as demo_parser
from workers.cli.demo import run as demo_run
from workers.cli.demo import synthesize_question
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog, timings
from workers.runtime.natsd import NatsServer, free_port
from workers.runtime.otlp_receiver import OtlpReceiver, ReceivedSpan

STAGES = {"mic", "stt", "llm", "tts", "speaker"}
CLOCK_SLACK_S = 0.05
"""Spans and events are stamped by separate calls to the same host clock: a span opens a
little before the event it leads to is stamped, and closes a little after. 50 ms is far
above that (sub-millisecond) and far below any stage's duration worth asserting on."""
NEAR_S = 1.0
"""Upper bound for "stamped right next to each other" in one process, even with an awaited
JetStream ack in between on a loaded 2-core CI machine (typically < 5 ms)."""


@dataclass
class Recorded:
    settings: Settings
    conversation_id: str
    utterance_id: str
    spans: list[ReceivedSpan]
    env: dict[str, str]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("traced")
    server = NatsServer(free_port(), tmp / "nats")
    server.start()
    receiver = OtlpReceiver().start()
    env = {
        "NATS_URL": server.url,
        "DATA_DIR": str(tmp / "data"),
        "DATABASE_URL": f"sqlite:///{(tmp / 'voice.db').as_posix()}",
        # Read by each worker process' telemetry setup (children copy os.environ).
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    get_settings.cache_clear()
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        wav = synthesize_question("What is the capital of France?", tmp / "question.wav")
        # In real time, as a microphone would: the as-heard rendering needs its clock.
        args = demo_parser().parse_args([str(wav), "--json"])
        # Leaving the pipeline SIGTERMs every worker, which flushes its spans.
        result = asyncio.run(demo_run(args, settings))
        (turn,) = result["turns"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if STAGES <= {sp.service for sp in receiver.snapshot()}:
                break
            time.sleep(0.1)
        yield Recorded(
            settings, result["conversation_id"], turn["utterance_id"], receiver.snapshot(), env
        )
    finally:
        receiver.stop()
        server.stop()
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture
def cli_env(recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    for k, v in recorded.env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return recorded


def turn_spans(r: Recorded) -> list[ReceivedSpan]:
    (root,) = [sp for sp in r.spans if sp.name == "utterance"]
    return [sp for sp in r.spans if sp.trace_id == root.trace_id]


def answered(r: Recorded) -> ReceivedSpan:
    """The llm span of the generation that was heard (a discarded speculation has its own)."""
    log = EventLog(r.settings.db_url, migrate=False)
    try:
        generation = log.turn(r.utterance_id).generation
    finally:
        log.close()
    (sp,) = [
        sp
        for sp in turn_spans(r)
        if sp.name == "llm.generate" and sp.attributes.get("llm.generation") == generation
    ]
    return sp


def played(r: Recorded) -> ReceivedSpan:
    (sp,) = [sp for sp in turn_spans(r) if sp.name == "speaker.playback"]
    return sp


def test_a_spoken_turn_is_one_trace_through_all_five_workers(recorded: Recorded) -> None:
    services = {sp.service for sp in recorded.spans}
    assert STAGES <= services, f"spans from {services}"
    traces = {sp.trace_id for sp in recorded.spans if sp.service in STAGES}
    assert len(traces) == 1, "every span of the turn shares one trace id"
    spans = turn_spans(recorded)
    assert {sp.service for sp in spans} >= STAGES
    ids = {sp.span_id for sp in spans}
    roots = [sp for sp in spans if not sp.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("mic", "utterance")]
    for sp in spans:
        if sp.parent_span_id:
            assert sp.parent_span_id in ids, f"{sp.service}/{sp.name} has a foreign parent"
    # Each stage's span is a child of the span that published the event it consumed.
    by_id = {sp.span_id: sp for sp in spans}
    parent = {sp.name: by_id[sp.parent_span_id].name for sp in spans if sp.parent_span_id in by_id}
    assert parent["stt.final"] == "utterance"
    # The answer heard is the llm generation of the transcript it answers: the final, or
    # the speculative one published at the pause (then committed by the final).
    answer = answered(recorded)
    question = by_id[answer.parent_span_id].name
    speculated = answer.attributes["llm.speculative"]
    assert question == ("stt.speculative" if speculated else "stt.final")
    if speculated:
        assert parent["stt.speculative"] == "utterance"
    assert by_id[played(recorded).parent_span_id].name == "tts.synthesize"
    assert by_id[by_id[played(recorded).parent_span_id].parent_span_id] == answer
    # The stage spans carry the latency attributes.
    by_name = {sp.name: sp for sp in spans}
    by_name["llm.generate"] = answer
    assert by_name["utterance"].attributes["utterance_id"] == recorded.utterance_id
    assert "final_latency_ms" in by_name["stt.final"].attributes
    assert "llm.first_token_ms" in by_name["llm.generate"].attributes
    assert "tts.first_audio_ms" in by_name["tts.synthesize"].attributes
    assert "speaker.first_audio_latency_ms" in by_name["speaker.playback"].attributes
    # And the log recorded the same trace id for the turn.
    log = EventLog(recorded.settings.db_url, migrate=False)
    try:
        assert log.turn(recorded.utterance_id).trace_id == roots[0].trace_id
    finally:
        log.close()


def test_span_times_agree_with_the_event_log(recorded: Recorded) -> None:
    log = EventLog(recorded.settings.db_url, migrate=False)
    try:
        t = log.turn(recorded.utterance_id)
    finally:
        log.close()
    by_name = {sp.name: sp for sp in turn_spans(recorded)}
    eps = CLOCK_SLACK_S

    def sec(ns: int) -> float:
        return ns / 1e9

    root = by_name["utterance"]
    # The mic opens its span, then stamps voice-started; stamps voice-stopped, publishes it
    # (awaiting the ack), then ends it. Both in one process: ordered, and close.
    assert 0 <= t.speech_started_at - sec(root.start_ns) < NEAR_S
    assert 0 <= sec(root.end_ns) - t.speech_ended_at < NEAR_S
    stt = by_name["stt.final"]
    assert t.speech_ended_at - eps <= sec(stt.start_ns)
    assert sec(stt.start_ns) - eps <= t.stt_final_at <= sec(stt.end_ns) + eps
    llm = answered(recorded)
    if llm.attributes["llm.speculative"]:
        # It answered the transcript of the pause, before the final: after that decode.
        spec = next(sp for sp in turn_spans(recorded) if sp.span_id == llm.parent_span_id)
        assert sec(spec.start_ns) - eps <= sec(llm.start_ns)
        assert t.speech_end_at - eps <= sec(spec.start_ns)
    else:
        assert t.stt_final_at - eps <= sec(llm.start_ns)
    assert sec(llm.start_ns) - eps <= t.llm_first_token_at <= t.llm_done_at
    assert t.llm_done_at <= sec(llm.end_ns) + eps
    tts = min(
        (
            sp
            for sp in turn_spans(recorded)
            if sp.name == "tts.synthesize" and sp.parent_span_id == llm.span_id
        ),
        key=lambda x: x.start_ns,
    )
    assert t.llm_first_sentence_at - eps <= sec(tts.start_ns)
    assert sec(tts.start_ns) - eps <= t.tts_first_audio_at <= sec(tts.end_ns) + eps
    spk = by_name["speaker.playback"]
    assert t.tts_first_audio_at - eps <= sec(spk.start_ns)
    assert sec(spk.start_ns) - eps <= t.playback_started_at
    assert t.playback_done_at <= sec(spk.end_ns) + eps


def test_trace_prints_a_waterfall_and_exports_a_jaeger_file(
    cli_env: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "turn.json"
    assert trace.main([cli_env.conversation_id, "--turn", "1", "--export-jaeger", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("speaking", "stt final", "llm", "tts", "playback"):
        assert any(line.startswith(label) for line in text.splitlines()), label
    waterfall = [line for line in text.splitlines() if "Jaeger JSON" not in line]
    assert max(len(line) for line in waterfall) <= 100
    doc = json.loads(out.read_text())
    (tr,) = doc["data"]
    real = {sp.name: sp for sp in turn_spans(cli_env)}
    # Reconstructed spans join the live trace: same trace id, the mic's real root span.
    assert tr["traceID"] == real["utterance"].trace_id
    services = {p["serviceName"] for p in tr["processes"].values()}
    assert services == STAGES
    root = [sp for sp in tr["spans"] if not sp["references"]]
    assert [sp["spanID"] for sp in root] == [real["utterance"].span_id]
    for sp in tr["spans"]:
        assert set(sp) >= {"traceID", "spanID", "operationName", "references", "startTime"}
        assert sp["processID"] in tr["processes"]
        for ref in sp["references"]:
            assert ref == {
                "refType": "CHILD_OF",
                "traceID": tr["traceID"],
                "spanID": root[0]["spanID"],
            }
    # The export holds the same stage timings the live spans measured (within the slack).
    stt = next(sp for sp in tr["spans"] if sp["operationName"] == "stt.final")
    stt_end_us = stt["startTime"] + stt["duration"]
    assert abs(stt_end_us / 1e6 - real["stt.final"].end_ns / 1e9) < CLOCK_SLACK_S


def test_unknown_ids_are_one_line_errors(
    cli_env: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace.main(["no-such-id"]) == 1
    assert replay.main(["no-such-id", "--fast"]) == 1
    assert replay.main(["no-such-id", "--listen"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("no conversation 'no-such-id'" in line for line in err)


def test_conversations_lists_when_turns_first_words_and_latency(
    cli_env: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert conversations.main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])["conversations"]
    row = next(r for r in rows if r["conversation_id"] == cli_env.conversation_id)
    assert row["turns"] == 1
    assert "capital" in row["first_words"].lower()
    assert row["voice_to_voice_ms"] > 0
    assert abs(row["started_at"] - time.time()) < 600


def test_listen_renders_both_sides_to_one_wav(
    cli_env: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay.main([cli_env.conversation_id, "--listen", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    log = EventLog(cli_env.settings.db_url, migrate=False)
    try:
        t = log.turn(cli_env.utterance_id)
        user = replay.user_audio(log, cli_env.utterance_id)
    finally:
        log.close()
    with wave.open(result["wav"], "rb") as w:
        seconds = w.getnframes() / w.getframerate()
    expected = len(user) / 2 / s.PIPELINE_RATE + t.played_ms / 1000 + 2 * replay.GAP_S
    assert user and t.played_ms > 0
    assert abs(seconds - expected) < 0.05
    assert Path(result["wav"]).parent == cli_env.settings.data_dir / "replays"


def test_as_heard_wav_shows_the_wait_the_log_reports(
    cli_env: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stereo rendering on the recorded clock, measured from the audio alone: the gap
    between the end of the user's voice (left) and the first sound of the reply (right) is
    the voice-to-voice latency the log reports, within 30 ms."""
    args = [cli_env.conversation_id, "--listen", "--as-heard", "--no-play", "--json"]
    assert replay.main(args) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    (reported,) = result["turns"]
    with wave.open(result["wav"], "rb") as w:
        assert w.getnchannels() == 2
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    # -50 dBFS: a quiet final consonant is still speech, the digital silence around is not
    loud = 10 ** (-50 / 20) * 32768
    user_end = np.flatnonzero(np.abs(pcm[:, 0]) > loud)[-1] / rate
    reply_start = np.flatnonzero(np.abs(pcm[:, 1]) > loud)[0] / rate
    log = EventLog(cli_env.settings.db_url, migrate=False)
    try:
        v2v_ms = timings(log.turn(cli_env.utterance_id)).voice_to_voice
    finally:
        log.close()
    measured_ms = 1000 * (reply_start - user_end)
    print(f"\nas heard: {measured_ms:.0f} ms from the audio, {v2v_ms:.0f} ms in the log")
    assert reported["utterance_id"] == cli_env.utterance_id
    reported_ms = 1000 * (reported["first_audio_s"] - reported["speech_end_s"])
    assert reported_ms == pytest.approx(v2v_ms, abs=1)
    assert measured_ms == pytest.approx(v2v_ms, abs=30)


def test_replay_runs_the_recorded_audio_through_the_pipeline_again(
    cli_env: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay.main([cli_env.conversation_id, "--speed", "fast", "--json"]) == 0
    out = capsys.readouterr().out
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    assert result["conversation_id"] == cli_env.conversation_id
    assert result["replay_conversation_id"] != cli_env.conversation_id
    (turn,) = result["turns"]
    then, now = turn["then"], turn["now"]
    assert then["utterance_id"] == cli_env.utterance_id
    assert now["utterance_id"] != then["utterance_id"]
    # Same audio, same model: the same words.
    assert now["transcript"].strip().lower() == then["transcript"].strip().lower()
    assert now["reply_text"]
    for key in ("stt_final", "llm_first_token", "tts_first_audio", "voice_to_voice"):
        assert now["timings_ms"][key] is not None and now["timings_ms"][key] >= 0, key
    log = EventLog(cli_env.settings.db_url, migrate=False)
    try:
        assert log.conversation(result["replay_conversation_id"]).turns == 1
    finally:
        log.close()
    assert os.path.isfile(
        cli_env.settings.data_dir / "replays" / result["replay_conversation_id"] / "turn-1.wav"
    )
