"""`just ask "QUESTION" [--conversation ID] [--json]`: a question to the llm worker over the bus.

The question is published as a final transcript (stt.transcript) and the reply is printed as
its tokens arrive. An llm worker and the recorder (which keeps the conversation for the next
question) are started as child processes unless they already run, and NATS is started when
nothing listens at NATS_URL. Reuse `--conversation ID` (printed at the end) to follow up.
With --json the last stdout line is `{"conversation_id", "reply_text", "sentences",
"first_token_ms", ...}` (the streamed text goes to stderr); first_token_ms is the time from
publishing the question to the first token arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from typing import Any

import nats.js.errors

from schemas import ControlError, ReplyDone, ReplySentence, ReplyToken, Transcript, new_id
from schemas import decode as decode_event
from workers.cli.command import CommandError, run_command, usage_error
from workers.llm.memory import EventLogMemory
from workers.runtime.bus import Bus
from workers.runtime.config import Settings, get_settings
from workers.runtime.procs import WorkerProcess, wait_pulling

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AskError(CommandError):
    pass


async def pulling(bus: Bus, durable: str) -> bool:
    """Whether a live worker is pulling from `durable` right now."""
    try:
        info = await bus.js.consumer_info(bus.stream, durable)
    except nats.js.errors.NotFoundError:
        return False
    return bool(info.num_waiting)


async def start_workers(bus: Bus, settings: Settings, timeout: float) -> list[WorkerProcess]:
    """Start the llm worker and the recorder unless some instance already pulls."""
    logs = settings.data_dir / "logs"
    started = []
    for module, durable in (("recorder", "recorder"), ("llm", "llm")):
        if await pulling(bus, durable):
            continue
        proc = WorkerProcess(module, settings, log_file=logs / f"{module}.log").start()
        started.append(proc)
    if started:
        print("ask: loading the model ...", file=sys.stderr, flush=True)
    for proc in started:
        try:
            await wait_pulling(bus, proc.module, [proc], timeout)
        except RuntimeError as exc:
            raise AskError(str(exc)) from None
    return started


async def ask(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    conv = args.conversation or new_id()
    question = Transcript(
        conversation_id=conv,
        utterance_id=new_id(),
        text=args.question.strip(),
        producer="ask",
        confidence=1.0,
    )
    out = sys.stderr if args.json else sys.stdout
    bus = await Bus.connect(settings, name="ask")
    procs: list[WorkerProcess] = []
    try:
        await bus.ensure_streams()
        tokens: list[ReplyToken] = []
        sentences: list[ReplySentence] = []
        first: dict[str, float] = {}
        errors: list[ControlError] = []
        done: asyncio.Future[ReplyDone] = asyncio.get_running_loop().create_future()

        async def on_msg(msg: Any) -> None:
            ev = decode_event(msg.data)
            if ev.utterance_id != question.utterance_id:
                return
            if isinstance(ev, ReplyToken) and ev.index == len(tokens):
                first.setdefault("token", time.perf_counter())
                tokens.append(ev)
                out.write(ev.text)
                out.flush()
            elif isinstance(ev, ReplySentence) and ev.index == len(sentences):
                first.setdefault("sentence", time.perf_counter())
                sentences.append(ev)
            elif isinstance(ev, ControlError):
                errors.append(ev)
            elif isinstance(ev, ReplyDone) and not done.done():
                done.set_result(ev)

        sub = await bus.nc.subscribe(f"voice.{conv}.>", cb=on_msg, pending_bytes_limit=-1)
        procs = await start_workers(bus, settings, args.timeout)
        t0 = time.perf_counter()
        await bus.publish(question)
        try:
            reply = await asyncio.wait_for(done, args.timeout)
        except TimeoutError:
            raise AskError(f"no reply within {args.timeout:.0f} s") from None
        if tokens:
            out.write("\n")
        await sub.unsubscribe()
        if any(p.module == "recorder" for p in procs):
            # Stop our recorder only once the reply is in the log: the next question needs it.
            memory = EventLogMemory(settings.db_url)
            await memory.wait_recorded([reply.event_id], timeout=10)
            memory.close()
    finally:
        await bus.close()
        for p in procs:  # all drain at once, then each is waited for
            if p.proc is not None and p.running:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop()
    if errors:
        raise AskError(f"{errors[0].code}: {errors[0].message}")

    def ms(key: str) -> float | None:
        return round(1000 * (first[key] - t0), 1) if key in first else None

    return {
        "conversation_id": conv,
        "utterance_id": question.utterance_id,
        "reply_text": reply.text.strip(),
        "sentences": [s.text for s in sentences],
        "first_token_ms": ms("token"),
        "first_sentence_ms": ms("sentence"),
        "tokens": reply.tokens,
        "prompt_tokens": reply.prompt_tokens,
        "finish_reason": reply.finish_reason,
        "model": reply.model,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="just ask", description=__doc__.split("\n\n")[0])
    p.add_argument("question", help="what to ask")
    p.add_argument("--conversation", default="", help="continue this conversation (its id)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = p.parse_args(argv)
    if not args.question.strip():
        return usage_error("ask", "empty QUESTION")
    if args.conversation and not _ID.match(args.conversation):
        return usage_error(
            "ask", f"bad --conversation {args.conversation!r}: 1-64 letters, digits, '-' or '_'"
        )
    settings = get_settings()
    return run_command(
        "ask",
        lambda: asyncio.run(ask(args, settings)),
        json_out=args.json,
        nats=settings,
        show=lambda r: print(f"(conversation {r['conversation_id']})", file=sys.stderr),
    )


if __name__ == "__main__":
    sys.exit(main())
