"""`just ask "QUESTION" [--conversation ID] [--json]`: a question to the llm worker over the bus.

The question is published as a final transcript (stt.transcript) of a conversation of this
run's own endpoint, bound to be answered in text only, and the reply is printed as its tokens
arrive. This run's own llm worker and recorder (which keeps the conversation for the next
question) run as child processes, and NATS is started when nothing listens at NATS_URL.
Reuse `--conversation ID` (printed at the end) to follow up. With --json the last stdout
line is `{"conversation_id", "endpoint", "reply_text", "sentences", "first_token_ms", ...}`
(the streamed text goes to stderr); first_token_ms is the time from publishing the question
to the first token arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from schemas import (
    ControlError,
    ReplyDone,
    ReplySentence,
    ReplyToken,
    Transcript,
    binding,
    new_id,
    subject_filter,
)
from schemas import decode as decode_event
from workers.cli.command import CommandError, run_command, usage_error
from workers.cli.pipeline import endpoint_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess
from workers.runtime.streams import ensure_streams

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AskError(CommandError):
    pass


@dataclass
class ReplyView:
    """The reply to one question as its events arrive (tokens echoed as they come)."""

    utterance_id: str
    out: TextIO
    tokens: list[ReplyToken] = field(default_factory=list)
    sentences: list[ReplySentence] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    errors: list[ControlError] = field(default_factory=list)
    done: asyncio.Future[ReplyDone] | None = None

    async def on_msg(self, msg: Any) -> None:
        ev = decode_event(msg.data)
        if ev.utterance_id != self.utterance_id:
            return
        if isinstance(ev, ReplyToken) and ev.index == len(self.tokens):
            self.first.setdefault("token", time.perf_counter())
            self.tokens.append(ev)
            self.out.write(ev.text)
            self.out.flush()
        elif isinstance(ev, ReplySentence) and ev.index == len(self.sentences):
            self.first.setdefault("sentence", time.perf_counter())
            self.sentences.append(ev)
        elif isinstance(ev, ControlError):
            self.errors.append(ev)
            self._resolve(None)
        elif isinstance(ev, ReplyDone):
            self._resolve(ev)

    def _resolve(self, done: ReplyDone | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(done)  # type: ignore[arg-type]


async def start_workers(bus: Bus, pool: Settings, timeout: float) -> list[WorkerProcess]:
    """This run's own llm and recorder (which keeps the conversation for a follow-up)."""
    logs = pool.data_dir / "logs"
    procs = [
        WorkerProcess(module, pool, worker_id=module, log_file=logs / f"{module}-{pool.pool}.log")
        for module in ("recorder", "llm")
    ]
    for proc in procs:
        proc.start()
    print("ask: loading the model ...", file=sys.stderr, flush=True)
    for proc in procs:
        try:
            await proc.wait_consumer(bus, timeout=timeout)
        except RuntimeError as exc:
            raise AskError(str(exc)) from None
    return procs


async def stop_workers(procs: list[WorkerProcess]) -> None:
    for p in procs:  # all drain at once, then each is waited for
        if p.proc is not None and p.running:
            p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        await asyncio.to_thread(p.stop)


async def ask(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The question as the final transcript of a turn of this run's own endpoint (bound to
    be answered in text only), answered by this run's own llm."""
    conv = args.conversation or new_id()
    endpoint = endpoint_for(settings, "ask", args.conversation)
    pool = settings.for_pool(endpoint)
    question = Transcript(
        endpoint=endpoint,
        conversation_id=conv,
        utterance_id=new_id(),
        text=args.question.strip(),
        producer="ask",
        confidence=1.0,
    )
    view = ReplyView(question.utterance_id, sys.stderr if args.json else sys.stdout)
    view.done = asyncio.get_running_loop().create_future()
    bus = await Bus.connect(pool, name="ask")
    procs: list[WorkerProcess] = []
    try:
        await ensure_streams(bus)
        subject = subject_filter(endpoint, conv)
        sub = await bus.nc.subscribe(subject, cb=view.on_msg, pending_bytes_limit=-1)
        procs = await start_workers(bus, pool, args.timeout)
        await bus.publish(binding(endpoint, conv, "text", last_stage="llm", producer="ask"))
        t0 = time.perf_counter()
        await bus.publish(question)
        try:
            reply = await asyncio.wait_for(view.done, args.timeout)
        except TimeoutError:
            raise AskError(f"no reply within {args.timeout:.0f} s") from None
        if view.tokens:
            view.out.write("\n")
        await sub.unsubscribe()
        if reply is not None:
            # Stop our recorder only once the reply is in the log: the next question needs it.
            log = EventLog(pool.db_url, migrate=False)
            await log.wait_recorded([reply.event_id], timeout=10)
            log.close()
    finally:
        await stop_workers(procs)
        await bus.delete_consumers(f"-{endpoint}")
        await bus.close()
    if view.errors or reply is None:
        error = view.errors[0]
        raise AskError(f"{error.code}: {error.message}")
    return summary(question, reply, view, t0)


def summary(question: Transcript, reply: ReplyDone, view: ReplyView, t0: float) -> dict[str, Any]:
    def ms(key: str) -> float | None:
        return round(1000 * (view.first[key] - t0), 1) if key in view.first else None

    return {
        "conversation_id": question.conversation_id,
        "endpoint": question.endpoint,
        "utterance_id": question.utterance_id,
        "reply_text": reply.text.strip(),
        "sentences": [s.text for s in view.sentences],
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
