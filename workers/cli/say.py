"""`just say "TEXT" --out FILE.wav [--json] [--realtime]`: text through the tts worker and the
WAV sink over the bus.

The text is cut into sentences and published as one reply (llm.reply-started, sentences,
llm.reply-done) of a new conversation of this run's own endpoint; its own tts worker and
speaker worker (WAV sink) run as child processes on NATS JetStream (the embedded server is
started when none listens at NATS_URL). The speaker's reply WAV is copied to --out. With
--json the last stdout line is `{"wav", "sample_rate", "duration_s", "first_audio_ms", ...}`;
first_audio_ms is the time from publishing the first sentence to the first tts.audio-chunk
arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import time
import wave
from pathlib import Path

from schemas import (
    ControlError,
    Event,
    PlaybackDone,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    TtsAudioChunk,
    binding,
    derive_id,
    new_id,
    subject_filter,
)
from schemas import decode as decode_event
from workers.cli.command import run_command, usage_error
from workers.cli.pipeline import tool_endpoint
from workers.runtime.audio import write_wav
from workers.runtime.bus import Bus
from workers.runtime.config import Settings, get_settings
from workers.runtime.procs import WorkerProcess
from workers.runtime.streams import ensure_streams

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


async def say(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    """The text as one reply of a new conversation of this run's own endpoint, spoken by
    this run's own tts and speaker (WAV sink)."""
    texts = split_sentences(args.text)
    endpoint = tool_endpoint("say")
    pool = settings.for_pool(endpoint)
    conv, utt = new_id(), new_id()
    logs = pool.data_dir / "logs"
    speaker_env = {"SPEAKER_SINK": "wav", "SPEAKER_REALTIME": "1" if args.realtime else "0"}
    procs = [
        WorkerProcess("tts", pool, worker_id="tts", log_file=logs / f"tts-{endpoint}.log"),
        WorkerProcess(
            "speaker",
            pool,
            worker_id="speaker",
            env=speaker_env,
            log_file=logs / f"speaker-{endpoint}.log",
        ),
    ]
    bus = await Bus.connect(pool, name="say")
    try:
        await ensure_streams(bus)
        chunks: list[TtsAudioChunk] = []
        first_chunk_at: list[float] = []
        done: asyncio.Future[PlaybackDone] = asyncio.get_running_loop().create_future()

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            ev = decode_event(msg.data)
            if isinstance(ev, TtsAudioChunk):
                if not first_chunk_at:
                    first_chunk_at.append(time.perf_counter())
                chunks.append(ev)
            elif isinstance(ev, PlaybackDone) and not done.done():
                done.set_result(ev)
            elif isinstance(ev, ControlError) and not done.done():
                done.set_exception(RuntimeError(f"{ev.failed_stage}: {ev.message}"))

        subject = subject_filter(endpoint, conv)
        sub = await bus.nc.subscribe(subject, cb=on_msg, pending_bytes_limit=-1)
        for p in procs:
            p.start()
        print("say: loading the voice ...", file=sys.stderr, flush=True)
        for p in procs:
            await p.wait_consumer(bus, timeout=args.timeout)
        t0 = time.perf_counter()
        for ev in reply_events(endpoint, conv, utt, args.text, texts):
            await bus.publish(ev)
        played = await asyncio.wait_for(done, args.timeout)
        await sub.unsubscribe()
    finally:
        await bus.delete_consumers(f"-{endpoint}")
        await bus.close()
        for p in procs:
            p.stop()
    return await asyncio.to_thread(
        finish, args.out, played, chunks, texts, conv, first_chunk_at, t0
    )


def reply_events(endpoint: str, conv: str, utt: str, text: str, texts: list[str]) -> list[Event]:
    """What an llm would publish for this text (after binding the conversation)."""
    common = {"endpoint": endpoint, "conversation_id": conv, "utterance_id": utt}
    events: list[Event] = [
        binding(endpoint, conv, "text", producer="say"),
        ReplyStarted(event_id=derive_id(utt, "reply-started"), producer="say", **common),
    ]
    events += [
        ReplySentence(
            event_id=derive_id(utt, "sentence", i),
            seq=i,
            producer="say",
            text=sentence,
            index=i,
            **common,
        )
        for i, sentence in enumerate(texts)
    ]
    events.append(
        ReplyDone(
            event_id=derive_id(utt, "reply-done"),
            producer="say",
            text=text,
            sentences=len(texts),
            tokens=0,
            **common,
        )
    )
    return events


def finish(
    out_arg: str,
    played: PlaybackDone,
    chunks: list[TtsAudioChunk],
    texts: list[str],
    conv: str,
    first_chunk_at: list[float],
    t0: float,
) -> dict[str, object]:
    out = Path(out_arg)
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = chunks[0].rate if chunks else 0
    if played.wav and Path(played.wav).is_file():
        shutil.copyfile(played.wav, out)
    else:  # a speaker without a WAV sink took the reply: write what the tts sent
        chunks.sort(key=lambda c: c.seq)
        write_wav(out, b"".join(c.audio for c in chunks), rate or 22050)
    with wave.open(str(out)) as w:
        rate, frames = w.getframerate(), w.getnframes()
    return {
        "wav": str(out),
        "sample_rate": rate,
        "duration_s": round(frames / rate, 3) if rate else 0.0,
        "first_audio_ms": round(1000 * (first_chunk_at[0] - t0), 1) if first_chunk_at else None,
        "sentences": len(texts),
        "chunks": len(chunks),
        "conversation_id": conv,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="just say", description=__doc__.split("\n\n")[0])
    p.add_argument("text", help="what to say")
    p.add_argument("--out", required=True, help="WAV file to write")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--realtime", action="store_true", help="play at real-time pace (default: fast)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = p.parse_args(argv)
    if not args.text.strip():
        return usage_error("say", "nothing to say (empty TEXT)")
    if Path(args.out).is_dir():
        return usage_error("say", f"--out {args.out} is a directory; give a .wav file")
    settings = get_settings()
    return run_command(
        "say",
        lambda: asyncio.run(say(args, settings)),
        json_out=args.json,
        nats=settings,
        show=lambda r: print(
            f"{r['wav']}: {r['duration_s']} s at {r['sample_rate']} Hz, "
            f"first audio after {r['first_audio_ms']} ms"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
