"""The mic worker on a real bus: what it publishes, and its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops.bench.stt import PHRASES, espeak_available, synth_espeak, with_silence
from schemas import (
    ConversationStarted,
    MicAudioChunk,
    TurnDecision,
    VoiceStarted,
    VoiceStopped,
    new_id,
)
from workers.mic.config import MicSettings
from workers.mic.worker import MicWorker
from workers.runtime.audio import write_wav
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.telemetry import add_exporter, trace_id_of

from .test_stt_stream import read_stream

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")
async def test_mic_publishes_only_utterances_with_gapless_chunks_and_one_trace_each(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    add_exporter(exporter)
    audio, _ = with_silence([synth_espeak(PHRASES[0]), synth_espeak(PHRASES[2])], gap_ms=1000)
    path = write_wav(tmp_path / "two.wav", audio.tobytes(), 16000)
    conv = new_id()
    mic = MicWorker(
        bus,
        settings,
        MicSettings(_env_file=None, file=str(path), realtime=False, conversation=conv),  # type: ignore[call-arg]
    )
    await mic.setup()
    await mic.run()
    events = await read_stream(bus, f"voice.*.{conv}.>")
    assert mic.utterances == 2
    # First the conversation is bound to the mic's endpoint (a file run: every stage).
    bound, _ = events[0]
    assert isinstance(bound, ConversationStarted)
    assert (bound.endpoint, bound.medium, bound.last_stage) == ("device", "file", "speaker")
    utterances: dict[str, list] = {}
    for ev, headers in events[1:]:
        utterances.setdefault(ev.utterance_id, []).append((ev, headers))
    assert len(utterances) == 2
    roots = {
        f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans() if s.name == "utterance"
    }
    for evs in utterances.values():
        # Each pause's end-of-turn decision, with its score, is on the log; the last ends it.
        decisions = [e for e, _ in evs if isinstance(e, TurnDecision)]
        assert decisions and decisions[-1].outcome == "end"
        assert decisions[-1].policy == "smart" and decisions[-1].score is not None
        assert [d.seq for d in decisions] == list(range(len(decisions)))
        evs = [(e, h) for e, h in evs if not isinstance(e, TurnDecision)]
        kinds = [type(e) for e, _ in evs]
        n = len(evs) - 2
        assert kinds == [VoiceStarted] + [MicAudioChunk] * n + [VoiceStopped]
        assert [e.seq for e, _ in evs[1:-1]] == list(range(n))
        stopped = evs[-1][0]
        assert stopped.chunks == n and stopped.reason == "silence"
        assert all(len(e.audio) == 640 for e, _ in evs[1:-1])  # 20 ms of 16 kHz int16
        assert evs[0][0].preroll_ms > 0 and evs[0][0].source == "two.wav"
        traces = {trace_id_of(h["traceparent"]) for _, h in evs}
        assert len(traces) == 1 and traces <= roots
    assert {e.producer for e, _ in events} == {mic.worker_id}


def test_mic_command_bad_file_is_one_line_error_without_a_bus(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workers.mic", "--file", str(tmp_path / "none.wav")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mic: error: {tmp_path / 'none.wav'}: no such file"
    ]


@pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")
async def test_a_file_mic_with_a_start_time_speaks_from_then_not_before(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """Several mics loaded beforehand start speaking together (`just bench load`)."""
    import time

    audio, _ = with_silence([synth_espeak(PHRASES[0])], gap_ms=300)
    path = write_wav(tmp_path / "one.wav", audio.tobytes(), 16000)
    conv = new_id()
    start_at = time.time() + 1.5
    mic = MicWorker(
        bus,
        settings,
        MicSettings(  # type: ignore[call-arg]
            _env_file=None, file=str(path), realtime=False, conversation=conv, start_at=start_at
        ),
    )
    await mic.setup()
    await mic.run()
    events = await read_stream(bus, f"voice.*.{conv}.>")
    started = [e for e, _ in events if isinstance(e, VoiceStarted)]
    assert mic.utterances == 1 and len(started) == 1
    assert started[0].ts >= start_at
