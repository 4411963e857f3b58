"""Endpoints: every conversation belongs to the place it is spoken from, and its reply is
synthesized once and played only there, by one speaker, whatever else runs on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats.errors
import pytest

import schemas as s
from tests.conftest import ROOT, wait_for
from tests.support import Tap, running
from workers.cli.demo import synthesize_question
from workers.llm.worker import LlmWorker
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.eventlog.verify import verify
from workers.runtime.natsd import NatsServer
from workers.runtime.procs import WorkerProcess

LONG = [
    "Well, first you fill a small pot with water, then you bring it to a rolling boil.",
    "Then you lower the eggs in gently with a spoon, and you wait for about nine minutes.",
    "After that you move them into cold water, and then, at last, you peel them.",
]


async def stored(bus: Bus, subject: str) -> list[s.Event]:
    """Every event the stream holds on `subject` (what was published, once each)."""
    sub = await bus.js.subscribe(subject, stream=bus.stream, ordered_consumer=True)
    out = []
    with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
        while True:
            out.append(s.decode((await sub.next_msg(timeout=1.0)).data))
    await sub.unsubscribe()
    return out


def reply_events(endpoint: str, conv: str, utt: str, texts: list[str]) -> list[s.Event]:
    common = {"endpoint": endpoint, "conversation_id": conv, "utterance_id": utt}
    return [
        s.binding(endpoint, conv, "text"),
        s.ReplyStarted(event_id=s.derive_id(utt, "started"), producer="llm-test", **common),
        *(
            s.ReplySentence(
                event_id=s.derive_id(utt, "s", i),
                seq=i,
                text=t,
                index=i,
                producer="llm-test",
                **common,
            )
            for i, t in enumerate(texts)
        ),
        s.ReplyDone(
            event_id=s.derive_id(utt, "done"),
            text=" ".join(texts),
            sentences=len(texts),
            tokens=0,
            producer="llm-test",
            **common,
        ),
    ]


@pytest.mark.slow
async def test_two_tts_and_two_speakers_share_four_conversations_each_reply_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """Several instances share the work: each reply is owned by one tts and one speaker,
    synthesized once and played once, its chunks in order; a tts owner killed -9 mid-sentence
    hands the reply to the other instance, which completes it without a sequence gap."""
    logs = tmp_path / "logs"
    # One reply at a time per instance, so both must work; short ack waits for the takeover.
    tts_env = {"TTS_MAX_CONCURRENT": "1", "TTS_ACK_WAIT_S": "1.5"}
    speaker_env = {"SPEAKER_SINK": "wav", "SPEAKER_REALTIME": "0", "SPEAKER_MAX_CONCURRENT": "1"}
    tts = {
        f"tts-{i}": WorkerProcess(
            "tts", settings, f"tts-{i}", env=tts_env, log_file=logs / f"tts-{i}.log"
        )
        for i in (1, 2)
    }
    speakers = [
        WorkerProcess(
            "speaker", settings, f"speaker-{i}", env=speaker_env, log_file=logs / f"speaker-{i}.log"
        )
        for i in (1, 2)
    ]
    tap = await Tap().start(bus)
    try:
        for p in [*tts.values(), *speakers]:
            p.start()
        for p in [*tts.values(), *speakers]:
            await p.wait_consumer(bus, timeout=120)
        turns = [(f"share-{i}", s.new_id()) for i in range(4)]
        texts = ["Hello there.", "This reply is spoken once and heard once, in order."]
        for conv, utt in turns:
            for ev in reply_events("device", conv, utt, texts):
                await bus.publish(ev)
        for _, utt in turns:
            await wait_for(lambda u=utt: tap.of(s.PlaybackDone, u), timeout=90)

        # Kill -9 the owner of a long reply in the middle of its first sentence.
        conv, utt = "share-kill", s.new_id()
        for ev in reply_events("device", conv, utt, LONG):
            await bus.publish(ev)
        first = (await wait_for(lambda: tap.of(s.TtsAudioChunk, utt), 60, 0.002))[0]
        owner = tts[first.producer]
        owner.kill()
        killed_at = len(tap.of(s.TtsAudioChunk, utt))
        await wait_for(lambda: tap.of(s.PlaybackDone, utt), timeout=90)
        owner.start()  # back for the rest of the suite's sake; it takes nothing more here
    finally:
        await tap.stop()
        for p in [*tts.values(), *speakers]:
            p.stop()

    owners = set()
    for c_id in [c for c, _ in turns] + ["share-kill"]:
        chunks = await stored(bus, s.subject_filter("*", c_id, "tts.audio-chunk"))
        assert sorted(c.seq for c in chunks) == list(range(len(chunks))), "gap or double"
        (done,) = [e for e in await stored(bus, s.subject_filter("*", c_id, "tts.done"))]
        assert done.chunks == len(chunks) and not done.interrupted
        (played,) = await stored(bus, s.subject_filter("*", c_id, "speaker.playback-done"))
        assert len(await stored(bus, s.subject_filter("*", c_id, "speaker.playback-started"))) == 1
        audio_ms = sum(len(c.audio) for c in chunks) / 2 / (chunks[0].rate / 1000)
        assert played.played_ms == pytest.approx(audio_ms, abs=1) and not played.interrupted
        assert os.path.getsize(played.wav) > 44  # noqa: ASYNC240
        owners.add(chunks[0].producer)
    assert owners == {"tts-1", "tts-2"}, "the two tts instances did not share the work"
    assert {e.producer for e in tap.of(s.PlaybackDone)} == {"speaker-1", "speaker-2"}
    # the killed owner had started; the other finished the reply
    kill_chunks = await stored(bus, s.subject_filter("*", "share-kill", "tts.audio-chunk"))
    assert killed_at < len(kill_chunks)
    assert {c.producer for c in kill_chunks} == set(tts), "the reply was not handed over"


async def test_a_transcription_only_conversation_gets_no_reply_beside_a_running_llm(
    bus: Bus, settings: Settings
) -> None:
    tap = await Tap().start(bus)
    async with running(LlmWorker(bus, settings)):
        quiet, asked = "only-stt", "answer-me"
        await bus.publish(s.binding("device", quiet, "file", last_stage="stt"))
        q = s.Transcript(
            endpoint="device",
            conversation_id=quiet,
            utterance_id=s.new_id(),
            text="What is the capital of France?",
        )
        a = s.Transcript(
            endpoint="device",
            conversation_id=asked,
            utterance_id=s.new_id(),
            text="What is the capital of France?",
        )
        await bus.publish(q)
        await bus.publish(a)  # after it on the same consumer: answered means q was passed over
        await tap.done(a.utterance_id, timeout=60)
    await tap.stop()
    assert not [e for e in tap.events if e.conversation_id == quiet and e.stage == "llm"]


async def test_a_transcript_older_than_the_limit_ends_its_turn_as_stale(
    bus: Bus, settings: Settings
) -> None:
    tap = await Tap().start(bus)
    old = s.Transcript(
        endpoint="device",
        conversation_id="stale",
        utterance_id=s.new_id(),
        text="Is anyone there?",
        ts=time.time() - 60,
    )
    async with running(LlmWorker(bus, settings)):
        await bus.publish(old)
        (err,) = await wait_for(lambda: tap.of(s.ControlError, old.utterance_id), timeout=30)
    await tap.stop()
    assert (err.failed_stage, err.code) == ("llm", "stale")
    assert "60 s old" in err.message or "s old" in err.message
    assert not tap.of(s.ReplyStarted, old.utterance_id)
    assert not tap.of(s.ReplyToken, old.utterance_id)


def v1_turn(conv: str, utt: str, t0: float) -> list[bytes]:
    """A whole turn as a build before endpoints wrote it: schema version 1, no endpoint,
    no speech_end_ts."""
    pcm = b"\x10\x00\xf0\xff" * 160  # 20 ms

    def env(type_: str, **fields: object) -> bytes:
        head = {
            "type": type_,
            "event_id": s.new_id(),
            "conversation_id": conv,
            "utterance_id": utt,
            "producer": "old",
            "schema_version": 1,
            **fields,
        }
        return json.dumps(head, separators=(",", ":")).encode()

    out = [env("mic.voice-started", ts=t0, source="old.wav")]
    out += [
        env("mic.audio-chunk", ts=t0 + 0.02 * i, seq=i, offset_ms=20.0 * i) + b"\n" + pcm
        for i in range(10)
    ]
    out.append(
        env(
            "mic.voice-stopped",
            ts=t0 + 0.6,
            chunks=10,
            duration_ms=200.0,
            speech_end_offset_ms=100.0,
        )
    )
    out.append(env("stt.transcript", ts=t0 + 0.7, text="Where is the old town?"))
    out.append(env("llm.reply-sentence", ts=t0 + 0.9, text="It is by the river.", index=0))
    out.append(
        env("llm.reply-done", ts=t0 + 1.0, text="It is by the river.", sentences=1, tokens=6)
    )
    out.append(
        env(
            "speaker.playback-done",
            ts=t0 + 2.5,
            played_ms=1400.0,
            sentences_heard=1,
            last_sentence_index=0,
            last_sentence_played_ms=1400.0,
        )
    )
    return out


async def test_an_event_recorded_with_schema_v1_decodes_replays_and_feeds_memory(
    settings: Settings,
) -> None:
    from workers.cli.replay import recorded_turns
    from workers.llm.memory import EventLogMemory
    from workers.runtime.eventlog import Record, timings

    conv, utt = "v1-conv", "v1-utt"
    t0 = time.time() - 3600
    log = EventLog(settings.db_url)
    try:
        log.append([Record.from_body(b) for b in v1_turn(conv, utt, t0)])
        events = log.events(conversation_id=conv)
        assert all(e.endpoint == s.LEGACY_ENDPOINT for e in events)
        assert all(e.schema_version == type(e).VERSION for e in events)
        stopped = next(e for e in events if isinstance(e, s.VoiceStopped))
        # it was published as the hangover ended: speech ended 100 ms of audio earlier
        assert stopped.speech_end_ts == pytest.approx(t0 + 0.6 - 0.1)
        # the log keeps what was received, version and all
        row = log.event_rows(conversation_id=conv, types=["mic.voice-stopped"])[0]
        assert row.schema_version == 1 and '"schema_version":1' in row.envelope
        (turn,) = log.turns(conv)
        assert turn.transcript == "Where is the old town?"
        assert timings(turn).endpoint_wait == pytest.approx(100.0, abs=0.5)
        (replayable,) = recorded_turns(log, conv)
        assert len(replayable.pcm) == 10 * 640
    finally:
        log.close()
    memory = EventLogMemory(settings.db_url)
    try:
        (previous,) = await memory.previous_turns(conv, "next-utterance")
    finally:
        memory.close()
    assert previous.user_text == "Where is the old town?"
    assert previous.assistant_text == "It is by the river."


@pytest.mark.slow
def test_up_and_a_demo_on_one_nats_each_hear_only_their_own_replies(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """`just up` (file microphone, WAV speaker) and `just demo` at the same time against one
    NATS and one event log: each reply is played only at its own endpoint, none is split,
    every count in the log matches, and the demo leaves no consumer behind."""
    up_wav = synthesize_question("What is two plus two?", tmp_path / "up.wav")
    demo_wav = synthesize_question("What colour is the sky?", tmp_path / "demo.wav")
    db = tmp_path / "voice.db"
    env = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{db}",
        "SPEAKER_SINK": "wav",
        "SPEAKER_REALTIME": "0",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.up", "--conversation", "up-conv"],
        env={**env, "MIC_FILE": str(up_wav), "MIC_REALTIME": "0"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "workers.cli.demo", str(demo_wav), "--json", "--fast"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, demo.stderr
        result = json.loads(demo.stdout.strip().splitlines()[-1])
        log = EventLog(f"sqlite:///{db}")
        deadline = time.monotonic() + 150
        while not [t for t in log.turns("up-conv") if t.playback_done_at]:
            assert up.poll() is None, up.communicate()[1]
            assert time.monotonic() < deadline, "`just up` did not finish its turn"
            time.sleep(0.3)
        consumers = asyncio.run(_consumers(nats_server.url, tmp_path))
    finally:
        up.send_signal(signal.SIGINT)
        _, up_err = up.communicate(timeout=60)
    assert up.returncode == 0, up_err

    demo_conv, demo_ep = result["conversation_id"], result["endpoint"]
    assert demo_ep.startswith("demo-")
    rows = {c.conversation_id: c for c in log.conversations()}
    assert rows["up-conv"].endpoint == "device" and rows[demo_conv].endpoint == demo_ep
    for conv, endpoint in (("up-conv", "device"), (demo_conv, demo_ep)):
        events = log.events(conversation_id=conv)
        assert {e.endpoint for e in events} == {endpoint}
        (turn,) = log.turns(conv)
        assert turn.transcript.strip() and turn.reply_text.strip()
        chunks = [e for e in events if isinstance(e, s.TtsAudioChunk)]
        played = [e for e in events if isinstance(e, s.PlaybackDone)]
        assert len(played) == 1 and not played[0].interrupted, "reply split or cut"
        audio_ms = sum(len(c.audio) for c in chunks) / 2 / (chunks[0].rate / 1000)
        assert played[0].played_ms == pytest.approx(audio_ms, abs=1)
        assert (
            len({e.producer for e in chunks}) == 1
            and len([e for e in events if isinstance(e, s.TtsStarted)]) == 1
        )
    assert verify(log, ["up-conv", demo_conv]) == []
    log.close()
    # The services' durables serve the services' endpoints; nothing of the demo is left.
    assert not [name for name in consumers if "demo-" in name]
    for name, filters in consumers.items():
        assert all(".device." in f or ".web." in f or ".wyoming." in f for f in filters), name


async def _consumers(url: str, tmp_path: Path) -> dict[str, list[str]]:
    settings = Settings(nats_url=url, data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    bus = await Bus.connect(settings, "test")
    try:
        out = {}
        for info in await bus.js.consumers_info(bus.stream):
            c = info.config
            if c.durable_name:  # not the ordered followers of claimed work
                out[info.name] = list(c.filter_subjects or [c.filter_subject or ""])
        return out
    finally:
        await bus.close()
