"""`python -m workers.mic [--file X.wav] [--fast] [--conversation ID] [--vad silero|webrtc]`."""

from __future__ import annotations

import argparse
import sys
from functools import partial

from workers.mic.config import MicSettings
from workers.mic.worker import (
    MicWorker,
    make_echo,
    make_endpointer,
    make_source,
    wants_reference,
)
from workers.runtime.audio import AudioFileError
from workers.runtime.endpoint.aec import AecError
from workers.runtime.endpoint.reference import ReferenceBuffer
from workers.runtime.endpoint.room import make_room
from workers.runtime.endpoint.sources import AudioSourceError
from workers.runtime.endpoint.vad import VadError
from workers.runtime.endpoint.wake import WakeError, WakeWord
from workers.runtime.models import ModelNotFoundError
from workers.runtime.service import run_worker


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.mic", description=__doc__)
    p.add_argument("--file", help="stream this WAV instead of the microphone")
    p.add_argument("--device", help="PortAudio input device name or index")
    p.add_argument("--fast", action="store_true", help="stream the file as fast as possible")
    p.add_argument("--conversation", help="conversation id (default: a new one)")
    p.add_argument(
        "--start-at",
        type=float,
        metavar="UNIX_S",
        help="start streaming the file at this wall-clock time (MIC_START_AT)",
    )
    p.add_argument("--vad", choices=["silero", "webrtc"])
    p.add_argument("--turn", choices=["smart", "vad"], help="end-of-turn policy (MIC_TURN)")
    p.add_argument(
        "--last-stage", choices=["stt", "llm", "speaker"], help="how far turns go (MIC_LAST_STAGE)"
    )
    p.add_argument("--replay-of", help="the conversation this run replays")
    p.add_argument("--aec", choices=["speex", "webrtc", "off"], help="echo canceller (MIC_AEC)")
    p.add_argument("--wake-word", help="answer only after this phrase (MIC_WAKE_WORD)")
    p.add_argument("--room", help='simulate a room, e.g. "loudspeaker" (MIC_ROOM)')
    p.add_argument(
        "--then",
        action="append",
        metavar="FILE[@S]",
        help="with --room: speak FILE after the reply (or S seconds into it); repeatable",
    )
    args = p.parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "file": args.file,
            "device": args.device,
            "conversation": args.conversation,
            "vad": args.vad,
            "turn": args.turn,
            "last_stage": args.last_stage,
            "replay_of": args.replay_of,
            "aec": args.aec,
            "room": args.room,
            "wake_word": args.wake_word,
            "script": args.then,
            "realtime": False if args.fast else None,
            "start_at": args.start_at,
        }.items()
        if v is not None
    }
    mic = MicSettings(**overrides)
    try:
        # Bad input fails here, in one line, before anything waits for the bus.
        reference = ReferenceBuffer() if wants_reference(mic) else None
        source = make_source(mic, reference)
        endpointer = make_endpointer(mic)
        if reference is not None:
            make_echo(mic, reference)  # the canceller's library is there
            if mic.room:
                make_room(mic.room, reference)
        if mic.wake_word:
            WakeWord(mic.wake_word)  # a known name, and the model loads
        worker = partial(
            MicWorker, mic=mic, source=source, endpointer=endpointer, reference=reference
        )
        return run_worker(worker, "mic")
    except (
        AecError,
        WakeError,
        AudioSourceError,
        AudioFileError,
        VadError,
        ModelNotFoundError,
        ValueError,
    ) as exc:
        print(f"mic: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
