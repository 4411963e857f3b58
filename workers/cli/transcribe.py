"""`just transcribe FILE.wav [FILE2.wav ...] [--json] [--fast]`: files through the live path.

Each file is streamed by its own mic worker (file source, real time unless --fast, one
conversation per file) to this run's own stt worker and recorder over NATS JetStream (the
embedded server is started when none listens at NATS_URL). The conversations are bound to
go no further than the stt: nothing answers or speaks them, whatever else runs on the bus.
Partials are printed as they come, then each final transcript. With --json the last stdout line is
`{"results": [{"file", "transcript", "language", "final_latency_ms", "utterances"}]}`;
final_latency_ms is the time from the last utterance's voice-stopped to its transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas import (
    ControlError,
    Transcript,
    TranscriptPartial,
    VoiceStarted,
    VoiceStopped,
    new_id,
    subject_filter,
)
from schemas import decode as decode_event
from workers.cli.command import run_command, usage_error
from workers.cli.pipeline import tool_endpoint
from workers.runtime.audio import AudioFileError, read_audio
from workers.runtime.bus import Bus
from workers.runtime.config import Settings, get_settings
from workers.runtime.procs import WorkerProcess, ready_durable, wait_pulling
from workers.runtime.streams import ensure_streams


@dataclass
class FileRun:
    path: Path
    conversation: str
    mic: WorkerProcess | None = None
    started: dict[str, float] = field(default_factory=dict)  # utterance -> onset ms
    stopped: dict[str, float] = field(default_factory=dict)  # utterance -> voice-stopped ts
    finals: dict[str, Transcript] = field(default_factory=dict)
    errors: dict[str, ControlError] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(1 for u in self.started if u not in self.finals and u not in self.errors)

    def result(self) -> dict[str, object]:
        order = sorted(self.started, key=lambda u: self.started[u])
        utts = []
        for u in order:
            t = self.finals.get(u)
            lat = None
            if t is not None and u in self.stopped:
                lat = round(1000.0 * (t.ts - self.stopped[u]), 1)
            utts.append(
                {
                    "utterance_id": u,
                    "transcript": t.text if t else None,
                    "error": self.errors[u].code if u in self.errors else None,
                    "final_latency_ms": lat,
                    "audio_ms": t.audio_ms if t else None,
                }
            )
        finals = [self.finals[u] for u in order if u in self.finals]
        return {
            "file": str(self.path),
            "transcript": " ".join(t.text for t in finals if t.text),
            "language": finals[-1].language if finals else "",
            "final_latency_ms": utts[-1]["final_latency_ms"] if utts else None,
            "utterances": utts,
        }


async def run(args: argparse.Namespace, settings: Settings) -> list[dict[str, object]]:
    """Each file through its own mic worker to this run's stt pool (its own endpoint, bound
    to go no further than the stt: no llm answers these, whatever else runs on the bus)."""
    endpoint = tool_endpoint("transcribe")
    pool = settings.for_pool(endpoint)
    runs = [FileRun(Path(f), new_id()) for f in args.files]
    bus = await Bus.connect(pool, name="transcribe")
    procs: list[WorkerProcess] = []
    try:
        await ensure_streams(bus)
        changed = asyncio.Event()
        subs = [
            await bus.nc.subscribe(
                subject_filter(endpoint, r.conversation),
                cb=_collect(r, args.quiet, changed),
                pending_bytes_limit=-1,
            )
            for r in runs
        ]
        procs = await _start_pool(bus, pool, args)
        _start_mics(pool, runs, args.fast)
        await _wait_finished(runs, procs, changed, args.timeout)
        for sub in subs:
            await sub.unsubscribe()
        return [r.result() for r in runs]
    finally:
        for r in runs:
            if r.mic:
                r.mic.stop()
        for p in procs:
            p.stop()
        await bus.delete_consumers(f"-{endpoint}")
        await bus.close()


def _collect(r: FileRun, quiet: bool, changed: asyncio.Event):  # type: ignore[no-untyped-def]
    """The subscription callback of one file's conversation: prints partials and finals."""
    name = r.path.name

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        try:
            ev = decode_event(msg.data)
        except Exception:
            return
        if isinstance(ev, VoiceStarted):
            r.started.setdefault(ev.utterance_id, ev.stream_offset_ms)
        elif isinstance(ev, VoiceStopped):
            r.stopped[ev.utterance_id] = ev.ts
        elif isinstance(ev, TranscriptPartial) and not quiet:
            print(f"[{name}] ... {ev.text}", flush=True)
        elif isinstance(ev, Transcript) and ev.utterance_id not in r.finals:
            r.finals[ev.utterance_id] = ev
            print(f"[{name}] {ev.text}", flush=True)
        elif isinstance(ev, ControlError):
            r.errors[ev.utterance_id] = ev
            print(f"[{name}] error {ev.code}: {ev.message}", file=sys.stderr, flush=True)
        changed.set()

    return on_msg


async def _start_pool(bus: Bus, pool: Settings, args: argparse.Namespace) -> list[WorkerProcess]:
    logs = pool.data_dir / "logs"
    procs = [
        WorkerProcess(
            "recorder", pool, worker_id="recorder", log_file=logs / f"recorder-{pool.pool}.log"
        ).start()
    ]
    for i in range(args.stt_instances):
        wid = f"stt-{i + 1}"
        procs.append(
            WorkerProcess("stt", pool, worker_id=wid, log_file=logs / f"{wid}-{pool.pool}.log")
        )
        procs[-1].start()
    print("transcribe: loading the stt model ...", file=sys.stderr, flush=True)
    await wait_pulling(bus, ready_durable("stt", pool), procs, timeout=args.timeout)
    await wait_pulling(bus, ready_durable("recorder", pool), procs, timeout=args.timeout)
    return procs


def _start_mics(pool: Settings, runs: list[FileRun], fast: bool) -> None:
    logs = pool.data_dir / "logs"
    for i, r in enumerate(runs):
        extra = ["--fast"] if fast else []
        r.mic = WorkerProcess(
            "mic",
            pool,
            worker_id=f"mic-{i + 1}",
            args=[
                "--file",
                str(r.path),
                "--conversation",
                r.conversation,
                "--last-stage",
                "stt",
                *extra,
            ],
            log_file=logs / f"mic-{i + 1}-{pool.pool}.log",
        ).start()


async def _wait_finished(
    runs: list[FileRun], procs: list[WorkerProcess], changed: asyncio.Event, timeout: float
) -> None:
    """Until every file has been streamed and each of its utterances has a final (or an
    error)."""
    deadline = time.monotonic() + timeout
    while any(r.mic and r.mic.running for r in runs) or any(r.pending for r in runs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no transcript after {timeout:.0f} s")
        for p in procs:
            if not p.running:
                raise RuntimeError(f"{p.worker_id} exited; see {p.log_file}")
        changed.clear()
        with _suppress_timeout():
            await asyncio.wait_for(changed.wait(), 0.1)
    for r in runs:
        assert r.mic is not None and r.mic.proc is not None
        if r.mic.proc.returncode:
            raise RuntimeError(f"mic for {r.path} failed; see {r.mic.log_file}")


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et, ev, tb) -> bool:  # type: ignore[no-untyped-def]
        return et is not None and issubclass(et, TimeoutError)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transcribe", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="WAV files (any rate, channels, width)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--fast", action="store_true", help="stream files as fast as possible")
    p.add_argument("--quiet", action="store_true", help="do not print partials")
    p.add_argument("--stt-instances", type=int, default=1, help="stt worker processes")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")
    args = p.parse_args(argv)
    for f in args.files:
        try:
            read_audio(f)
        except AudioFileError as exc:
            return usage_error("transcribe", str(exc))
    settings = get_settings()
    return run_command(
        "transcribe",
        lambda: {"results": asyncio.run(run(args, settings))},
        json_out=args.json,
        nats=settings,
    )


if __name__ == "__main__":
    sys.exit(main())
