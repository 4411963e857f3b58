"""STT as separate processes: scale-out, kill -9 recovery, and the `transcribe` command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import nats.js.errors
import pytest

from ops.bench.stt import PHRASES, espeak_available, synth, wer, with_silence
from schemas import Transcript, TranscriptPartial, VoiceStarted, decode, new_id
from workers.mic.config import MicSettings
from workers.mic.worker import MicWorker
from workers.runtime.audio import write_wav
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess, settings_env

from .test_stt_stream import WER_BOUND, read_stream

pytestmark = pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")

ROOT = Path(__file__).resolve().parent.parent


def stt_process(settings: Settings, worker_id: str, tmp_path: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(
        "stt",
        settings,
        worker_id=worker_id,
        env={"STT_ACK_WAIT_S": "1.5", **env},
        log_file=tmp_path / f"{worker_id}.log",
    ).start()


async def wait_pulling(bus: Bus, procs: list[WorkerProcess], loops: int, timeout=60.0) -> None:
    """Until `loops` pull requests wait on the "stt" durable (models loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for p in procs:
            assert p.running, f"{p.worker_id} exited; see {p.log_file}"
        try:
            if (await bus.js.consumer_info(bus.stream, "stt")).num_waiting >= loops:
                return
        except nats.js.errors.NotFoundError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("stt not ready")


def write_conversation(tmp_path: Path, name: str, phrases: list[str], engine: str) -> Path:
    # Gaps longer than the smart turn's max silence: two turns whatever the load (a 700 ms gap
    # is a pause the end-pointer may hold while a loaded stt's transcript is on its way).
    audio, _ = with_silence([synth(p, engine) for p in phrases], gap_ms=1300, lead_ms=300)
    return write_wav(tmp_path / f"{name}.wav", audio.tobytes(), 16000)


async def mic(bus: Bus, settings: Settings, path: Path, conv: str) -> MicWorker:
    w = MicWorker(bus, settings, MicSettings(_env_file=None, file=str(path), conversation=conv))  # type: ignore[call-arg]
    await w.setup()
    await w.run()
    return w


async def test_two_instances_four_conversations_each_utterance_transcribed_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    procs = [stt_process(settings, f"stt-{i}", tmp_path, STT_MAX_CONCURRENT="2") for i in (1, 2)]
    try:
        await wait_pulling(bus, procs, loops=4)
        convs = {new_id(): PHRASES[2 * i : 2 * i + 2] for i in range(4)}
        files = {
            c: write_conversation(tmp_path, f"c{i}", ph, "espeak" if i % 2 else "piper")
            for i, (c, ph) in enumerate(convs.items())
        }
        # Four users speak at the same time, in real time.
        await asyncio.gather(*(mic(bus, settings, files[c], c) for c in convs))

        async def transcripts() -> list[Transcript]:
            return [
                e
                for e, _ in await read_stream(bus, "voice.*.*.stt.transcript")
                if not e.speculative  # type: ignore[attr-defined]
            ]

        for _ in range(150):
            if len(await transcripts()) >= 8:
                break
            await asyncio.sleep(0.1)
    finally:
        for p in procs:
            p.stop()
    events = await read_stream(bus)
    finals = [e for e, _ in events if isinstance(e, Transcript) and not e.speculative]
    starts = [e for e, _ in events if isinstance(e, VoiceStarted)]
    assert len(starts) == 8
    # Every utterance exactly once (the stream de-duplicates by event id).
    assert sorted(t.utterance_id for t in finals) == sorted(s.utterance_id for s in starts)
    # None mixed: each transcript is its own conversation's phrase, in order.
    refs, hyps = [], []
    for conv, phrases in convs.items():
        mine = sorted(
            (s for s in starts if s.conversation_id == conv), key=lambda s: s.stream_offset_ms
        )
        by_utt = {t.utterance_id: t for t in finals if t.conversation_id == conv}
        for phrase, s in zip(phrases, mine, strict=True):
            refs.append(phrase)
            hyps.append(by_utt[s.utterance_id].text)
            assert wer([phrase], [hyps[-1]]) <= 0.5, (phrase, hyps[-1])
    assert wer(refs, hyps) <= WER_BOUND
    # Both instances did work.
    assert {t.producer for t in finals} == {"stt-1", "stt-2"}


async def test_kill_stt_mid_utterance_is_not_lost(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    first = stt_process(settings, "stt-1", tmp_path, STT_PARTIAL_INTERVAL_MS="300")
    second: WorkerProcess | None = None
    try:
        await wait_pulling(bus, [first], loops=1)
        conv = new_id()
        path = write_conversation(tmp_path, "long", [PHRASES[7]], "espeak")
        partial_from_first = asyncio.Event()

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            ev = decode(msg.data)
            if isinstance(ev, TranscriptPartial) and ev.producer == "stt-1":
                partial_from_first.set()

        sub = await bus.nc.subscribe(f"voice.*.{conv}.stt.>", cb=on_msg)
        speaking = asyncio.create_task(mic(bus, settings, path, conv))
        await asyncio.wait_for(partial_from_first.wait(), 20)
        first.kill()  # kill -9 while the user is still speaking
        assert not speaking.done()
        second = stt_process(settings, "stt-2", tmp_path)
        await speaking
        for _ in range(200):
            if [e for e, _ in await read_stream(bus, f"voice.*.{conv}.stt.transcript")]:
                break
            await asyncio.sleep(0.1)
        await sub.unsubscribe()
    finally:
        first.kill()
        if second is not None:
            second.stop()
    finals = [
        e
        for e, _ in await read_stream(bus, f"voice.*.{conv}.stt.transcript")
        if not e.speculative  # type: ignore[attr-defined]
    ]
    assert len(finals) == 1
    assert finals[0].producer == "stt-2"
    assert wer([PHRASES[7]], [finals[0].text]) <= WER_BOUND


def test_transcribe_command_prints_partials_finals_and_json(
    settings: Settings, tmp_path: Path
) -> None:
    one = write_conversation(tmp_path, "one", [PHRASES[1]], "piper")
    two = write_conversation(tmp_path, "two", [PHRASES[2], PHRASES[0]], "espeak")
    env = settings_env(settings)
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli.transcribe", str(one), str(two), "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert any(" ... " in line for line in lines)  # partials as they come
    results = json.loads(lines[-1])["results"]
    assert [r["file"] for r in results] == [str(one), str(two)]
    refs = [PHRASES[1], f"{PHRASES[2]} {PHRASES[0]}"]
    assert wer(refs, [r["transcript"] for r in results]) <= WER_BOUND
    for r in results:
        assert r["language"] == "en"
        assert 0 <= r["final_latency_ms"] < 5000
    assert len(results[1]["utterances"]) == 2


def test_transcribe_command_bad_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli.transcribe", str(bad), str(tmp_path / "none.wav")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a readable audio file" in proc.stderr
