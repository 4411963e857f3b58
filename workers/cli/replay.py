"""`just replay ID [--speed realtime|fast] [--json]` and `just replay ID --listen`.

Replay: the user audio recorded for conversation ID (its mic.audio-chunk payloads, per turn)
goes through the current pipeline again, as a new conversation, one turn at a time, and each
turn is printed side by side, then and now: transcript, reply and per-stage latency. The
audio is paced in real time by default (`--speed fast`: as fast as possible). Turns without
recorded audio (typed with `just ask`) are replayed by publishing their transcript. With
--json the last stdout line is {"conversation_id", "replay_conversation_id", "turns": [{"turn",
"then": {...}, "now": {...}}]}.

--listen: no pipeline; renders the recorded conversation, both sides in turn order (the
user's audio, then the reply as it was heard), to DATA_DIR/replays/ID.wav and plays it when
an audio output device exists. --listen --as-heard renders it on its recorded clock instead,
in stereo (left: the user when they were captured; right: each reply when it was played, cut
where it stopped), to DATA_DIR/replays/ID-as-heard.wav; with --json the last line is
{"wav", "turns": [{"utterance_id", "speech_end_s", "first_audio_s"}]} (seconds from the
file's start): the gap between the two is the voice-to-voice latency the user waited.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import schemas as s
from workers.cli.command import CommandError, run_command
from workers.cli.demo import TURN_TIMEOUT_S, LiveView, TurnView, wait_recorded
from workers.cli.pipeline import Pipeline, progress, tool_endpoint
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog, timings

RATE = s.PIPELINE_RATE
LEAD_S = 0.3
"""Silence before the replayed speech, so the VAD sees an onset like the first time."""
GAP_S = 0.4
"""Pause between the parts of the --listen rendering."""
TIMINGS = [
    ("endpoint_wait", "end-of-turn wait"),
    ("stt_final", "stt final"),
    ("llm_first_token", "llm 1st token"),
    ("llm_first_sentence", "llm 1st sentence"),
    ("tts_first_audio", "tts 1st audio"),
    ("playback_start", "playback start"),
    ("voice_to_voice", "voice-to-voice"),
    ("voice_to_voice_from_endpoint", "(from endpoint)"),
]


class ReplayError(CommandError):
    """Bad input (unknown conversation, nothing to replay): one line, exit 1."""


@dataclass
class RecordedTurn:
    index: int
    row: Any
    pcm: bytes
    """The user's recorded audio, 16 kHz mono int16 ('' for a typed turn)."""


def user_audio(log: EventLog, utterance_id: str) -> bytes:
    chunks = log.events(utterance_id=utterance_id, types=[s.MicAudioChunk.type])
    chunks = [c for c in chunks if isinstance(c, s.MicAudioChunk)]
    return b"".join(c.audio for c in sorted(chunks, key=lambda c: c.seq))


def recorded_turns(log: EventLog, conversation_id: str) -> list[RecordedTurn]:
    """The conversation's turns with the user's audio. An utterance a later one resumed
    (the user only paused) is not one: the resuming utterance's audio starts with it."""
    if log.conversation(conversation_id) is None:
        raise ReplayError(f"no conversation {conversation_id!r} (see: just conversations)")
    rows = log.turns(conversation_id, with_resumed=False)
    return [
        RecordedTurn(i, row, user_audio(log, row.utterance_id)) for i, row in enumerate(rows, 1)
    ]


def turn_summary(row: Any) -> dict[str, Any]:
    return {
        "utterance_id": row.utterance_id,
        "transcript": row.transcript,
        "reply_text": row.reply_text,
        "status": row.status,
        "timings_ms": timings(row).as_dict(),
    }


def write_pcm_wav(path: Path, pcm: bytes, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


# -- side-by-side --------------------------------------------------------------------------

COL = 39
LABEL = 18


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def side_by_side(index: int, then: dict[str, Any], now: dict[str, Any] | None) -> str:
    now = now or {"transcript": "(not replayed)", "reply_text": "", "timings_ms": {}}
    lines = [f"turn {index}".ljust(LABEL + 2) + "then".ljust(COL + 1) + "now"]

    def text_row(label: str, a: str, b: str) -> None:
        wa = textwrap.wrap(a.strip(), COL) or ["-"]
        wb = textwrap.wrap(b.strip(), COL) or ["-"]
        for i in range(max(len(wa), len(wb))):
            la = wa[i] if i < len(wa) else ""
            lb = wb[i] if i < len(wb) else ""
            lines.append(f"  {label if i == 0 else '':{LABEL}}{la:<{COL}} {lb}".rstrip())

    text_row("transcript", then["transcript"], now["transcript"])
    text_row("reply", then["reply_text"], now["reply_text"])
    for key, label in TIMINGS:
        a, b = then["timings_ms"].get(key), now["timings_ms"].get(key)
        delta = f"({b - a:+.0f} ms)" if a is not None and b is not None else ""
        lines.append(f"  {label:{LABEL}}{_ms(a):<{COL}} {_ms(b):<10} {delta}".rstrip())
    return "\n".join(lines)


# -- replay --------------------------------------------------------------------------------


async def replay(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    log = EventLog(settings.db_url)
    try:
        recorded = await asyncio.to_thread(recorded_turns, log, args.conversation)
    except BaseException:
        log.close()
        raise
    if not recorded:
        log.close()
        raise ReplayError(f"conversation {args.conversation!r} has no turns")
    out = sys.stderr if args.json else sys.stdout
    new_conv = args.as_conversation or s.new_id()[:16]
    work = settings.data_dir / "replays" / new_conv
    progress(f"replaying {len(recorded)} turn(s) of {args.conversation} as {new_conv}")
    view = LiveView(sys.stderr)
    results: list[dict[str, Any]] = []
    endpoint = tool_endpoint("replay")
    try:
        env = {"speaker": {"SPEAKER_SINK": "wav"}}
        async with Pipeline(settings, env=env, pool=endpoint) as p:
            assert p.bus is not None
            sub = await p.watch(new_conv, view.on_event)
            await p.bus.publish(
                s.binding(
                    endpoint, new_conv, "file", producer="replay", replay_of=args.conversation
                )
            )
            for rt in recorded:
                then = turn_summary(rt.row)
                seen = set(view.turns)
                print(f"\nreplaying turn {rt.index}", file=sys.stderr)
                if rt.pcm:
                    lead = b"\x00\x00" * int(LEAD_S * RATE)
                    wav = write_pcm_wav(work / f"turn-{rt.index}.wav", lead + rt.pcm, RATE)
                    mic_args = ["--file", str(wav), "--conversation", new_conv]
                    mic_args += ["--replay-of", args.conversation]
                    if args.speed == "fast":
                        mic_args.append("--fast")
                    mic = p.start_mic(*mic_args, worker_id=f"mic-replay-{rt.index}")
                elif rt.row.transcript.strip():
                    mic = None
                    await p.bus.publish(
                        s.Transcript(
                            endpoint=endpoint,
                            conversation_id=new_conv,
                            utterance_id=s.new_id(),
                            text=rt.row.transcript.strip(),
                            producer="replay",
                            confidence=1.0,
                        )
                    )
                else:
                    results.append({"turn": rt.index, "then": then, "now": None})
                    print(side_by_side(rt.index, then, None), file=out)
                    continue
                try:
                    new_turns = await view.wait_turns_done(seen, TURN_TIMEOUT_S)
                except TimeoutError:
                    raise RuntimeError(
                        p.worker_failed()
                        or f"turn {rt.index} did not finish in {TURN_TIMEOUT_S:.0f} s; "
                        f"logs in {p.logs}"
                    ) from None
                if mic is not None:
                    await asyncio.to_thread(mic.stop)
                now = await _now(log, new_turns)
                results.append({"turn": rt.index, "then": then, "now": now})
                print("", file=out)
                print(side_by_side(rt.index, then, now), file=out)
            await sub.unsubscribe()
    finally:
        log.close()
    print(f"\nreplayed as conversation {new_conv}  (just trace {new_conv})", file=out)
    return {
        "conversation_id": args.conversation,
        "replay_conversation_id": new_conv,
        "turns": results,
    }


async def _now(log: EventLog, new_turns: list[TurnView]) -> dict[str, Any]:
    """The replayed turn as recorded; if the VAD split the audio differently, the texts of
    all its utterances are joined and the timings are the first utterance's."""
    ids = [t.utterance_id for t in new_turns]
    await wait_recorded(log, ids)
    rows = [r for u in ids if (r := await asyncio.to_thread(log.turn, u)) is not None]
    if not rows:
        return {
            "transcript": " ".join(t.transcript or "" for t in new_turns),
            "reply_text": " ".join("".join(t.reply) for t in new_turns),
            "status": "unrecorded",
            "timings_ms": {},
        }
    rows.sort(key=lambda r: r.turn_index)
    now = turn_summary(rows[0])
    if len(rows) > 1:
        now["transcript"] = " ".join(r.transcript for r in rows)
        now["reply_text"] = " ".join(r.reply_text for r in rows)
        now["utterances"] = len(rows)
    return now


# -- listen --------------------------------------------------------------------------------


def reply_audio(log: EventLog, row: Any) -> tuple[np.ndarray, int]:
    """The reply as it was heard: the speaker's WAV, else the synthesized chunks cut at
    played_ms (an interrupted reply stops where the user cut it off)."""
    path = Path(row.reply_wav) if row.reply_wav else None
    if path is not None and path.is_file():
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() == 2:
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
                return pcm[:: w.getnchannels()].copy(), w.getframerate()
    chunks = [
        c
        for c in log.events(utterance_id=row.utterance_id, types=[s.TtsAudioChunk.type])
        if isinstance(c, s.TtsAudioChunk) and c.width == 2 and c.channels == 1
    ]
    if not chunks:
        return np.zeros(0, dtype=np.int16), RATE
    chunks.sort(key=lambda c: c.seq)
    rate = chunks[0].rate
    pcm = np.frombuffer(b"".join(c.audio for c in chunks if c.rate == rate), dtype=np.int16)
    if row.playback_done_at is not None:
        pcm = pcm[: int(row.played_ms * rate / 1000)]
    return pcm, rate


def render(log: EventLog, conversation_id: str, out: Path) -> tuple[Path, float]:
    """Both sides in turn order, one after the other with short pauses (not on the original
    timeline: a barge-in is heard after the reply it cut, not over it)."""
    from workers.runtime.audio import resample_pcm16

    parts: list[tuple[np.ndarray, int]] = []
    for rt in recorded_turns(log, conversation_id):
        if rt.pcm:
            parts.append((np.frombuffer(rt.pcm, dtype=np.int16), RATE))
        parts.append(reply_audio(log, rt.row))
    parts = [(p, r) for p, r in parts if len(p)]
    if not parts:
        raise ReplayError(f"conversation {conversation_id!r} has no recorded audio")
    rate = max(r for _, r in parts)
    gap = np.zeros(int(GAP_S * rate), dtype=np.int16)
    pieces = []
    for pcm, r in parts:
        if r != rate:
            pcm = np.frombuffer(resample_pcm16(pcm.tobytes(), r, rate), dtype=np.int16)
        pieces += [pcm, gap]
    audio = np.concatenate(pieces)
    write_pcm_wav(out, audio.tobytes(), rate)
    return out, len(audio) / rate


#: Silence before the first sound of an as-heard rendering, seconds.
AS_HEARD_LEAD_S = 0.5


@dataclass
class HeardTurn:
    utterance_id: str
    speech_end_s: float | None
    """When the user's speech really ended, seconds from the file's start."""
    first_audio_s: float | None
    """When the first sample of the reply was played, seconds from the file's start."""


def render_as_heard(
    log: EventLog, conversation_id: str, out: Path
) -> tuple[Path, float, list[HeardTurn]]:
    """The conversation on its recorded clock, in stereo: left the user's audio where it was
    captured, right each reply where it was played (cut where it stopped being heard), so a
    barge-in sounds like one and every wait is as long as it was."""
    from workers.runtime.audio import resample_pcm16

    turns = recorded_turns(log, conversation_id)
    user: list[tuple[float, np.ndarray]] = []
    replies: list[tuple[float, np.ndarray, int]] = []
    for rt in turns:
        row = rt.row
        if rt.pcm and row.speech_end_at is not None:
            # Utterance start on the capture clock: speech ended speech_end_offset into it.
            end_offset_s = _speech_end_offset_s(log, row.utterance_id)
            user.append((row.speech_end_at - end_offset_s, np.frombuffer(rt.pcm, np.int16)))
        if row.playback_started_at is not None:
            pcm, rate = reply_audio(log, row)
            if len(pcm):
                replies.append((row.playback_started_at, pcm, rate))
    if not user and not replies:
        raise ReplayError(f"conversation {conversation_id!r} has no recorded audio")
    rate = max([r for _, _, r in replies] + [RATE])
    t0 = min([t for t, _ in user] + [t for t, _, _ in replies]) - AS_HEARD_LEAD_S
    placed_user = [(t, _at_rate(pcm, RATE, rate, resample_pcm16)) for t, pcm in user]
    placed_reply = [(t, _at_rate(pcm, r, rate, resample_pcm16)) for t, pcm, r in replies]
    end = max(int((t - t0) * rate) + len(pcm) for t, pcm in placed_user + placed_reply)
    stereo = np.zeros((end + int(AS_HEARD_LEAD_S * rate), 2), dtype=np.int16)
    for channel, placed in ((0, placed_user), (1, placed_reply)):
        for t, pcm in placed:
            a = round((t - t0) * rate)
            stereo[a : a + len(pcm), channel] = pcm
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(stereo.tobytes())
    heard = [
        HeardTurn(
            rt.row.utterance_id,
            None if rt.row.speech_end_at is None else round(rt.row.speech_end_at - t0, 4),
            None
            if rt.row.playback_started_at is None
            else round(rt.row.playback_started_at - t0, 4),
        )
        for rt in turns
    ]
    return out, len(stereo) / rate, heard


def _speech_end_offset_s(log: EventLog, utterance_id: str) -> float:
    stopped = log.events(utterance_id=utterance_id, types=[s.VoiceStopped.type])
    for e in stopped:
        if isinstance(e, s.VoiceStopped):
            return e.speech_end_offset_ms / 1000.0
    return 0.0


def _at_rate(pcm: np.ndarray, rate: int, want: int, resample: Any) -> np.ndarray:
    if rate == want:
        return pcm
    return np.frombuffer(resample(pcm.tobytes(), rate, want), dtype=np.int16)


def play(path: Path) -> str:
    """Play the file on the default output device; returns why not when it cannot."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="output")
    except Exception as exc:  # no PortAudio, no device: rendering is the product here
        return f"not played: no audio output device ({exc.__class__.__name__})"
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    try:
        sd.play(pcm, rate)
        sd.wait()
    except Exception as exc:
        return f"not played: {exc}"
    return "played"


def listen(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    log = EventLog(settings.db_url)
    folder = settings.data_dir / "replays"
    heard: list[HeardTurn] = []
    try:
        if args.as_heard:
            out = folder / f"{args.conversation}-as-heard.wav"
            path, seconds, heard = render_as_heard(log, args.conversation, out)
        else:
            path, seconds = render(log, args.conversation, folder / f"{args.conversation}.wav")
    finally:
        log.close()
    out_stream = sys.stderr if args.json else sys.stdout
    print(f"{path}  ({seconds:.1f} s)", file=out_stream)
    for h in heard:
        if h.speech_end_s is not None and h.first_audio_s is not None:
            wait = 1000 * (h.first_audio_s - h.speech_end_s)
            print(
                f"  {h.utterance_id}: you stopped at {h.speech_end_s:.2f} s, the reply began "
                f"at {h.first_audio_s:.2f} s ({wait:.0f} ms later)",
                file=out_stream,
            )
    played = "not played (--no-play)" if args.no_play else play(path)
    progress(played)
    result: dict[str, Any] = {
        "conversation_id": args.conversation,
        "wav": str(path),
        "seconds": round(seconds, 2),
    }
    if args.as_heard:
        result["turns"] = [h.__dict__ for h in heard]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("conversation", help="conversation id (see: just conversations)")
    p.add_argument(
        "--speed",
        choices=["realtime", "fast"],
        default="realtime",
        help="pace of the replayed audio (default: realtime)",
    )
    p.add_argument("--fast", action="store_true", help="same as --speed fast")
    p.add_argument("--as", dest="as_conversation", help="id of the new conversation")
    p.add_argument("--listen", action="store_true", help="render the recording to one WAV")
    p.add_argument("--no-play", action="store_true", help="with --listen: only write the WAV")
    p.add_argument(
        "--as-heard",
        action="store_true",
        help="with --listen: stereo on the recorded clock (left you, right the replies), "
        "every wait as long as it was",
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    args = p.parse_args(argv)
    if args.fast:
        args.speed = "fast"
    settings = get_settings()
    if args.listen:
        return run_command("replay", lambda: listen(args, settings), json_out=args.json)
    return run_command("replay", lambda: asyncio.run(replay(args, settings)), json_out=args.json)


if __name__ == "__main__":
    sys.exit(main())
