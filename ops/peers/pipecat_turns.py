"""Spoken turns through Pipecat, headless, on the same models as voicebus (run in .venv-peers).

    python ops/peers/pipecat_turns.py --spec SPEC.json

SPEC: {"turns": [{"wav", "speech_end_s"}], "whisper_dir", "piper_dir", "piper_voice",
"llm_url", "system_prompt", "temperature", "max_tokens"}. Each WAV (16 kHz mono int16) is fed
as 20 ms `InputAudioRawFrame`s at real-time pace, as a microphone would deliver them, followed
by silence until the reply's audio has come out; the turns form one conversation. Pipecat's own
defaults decide the end of the turn (Silero VAD, then its default stop strategy, Smart Turn v3).
A sink at the end of the pipeline stamps the first TTS audio frame of each turn. The last
stdout line is {"turns": [{"speech_end", "first_audio", "voice_to_voice_ms", "replies",
"transcript", "reply"}]}: speech_end is the wall time the input's voice really stopped (the
WAV's own speech end, placed on the feeding clock), first_audio the wall time of the first
reply audio, replies how many answers the WAV drew (more than one: it was cut in turns).

This file imports only Pipecat and the standard library: it is the peer, not voicebus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave
from pathlib import Path

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseStartFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.workers.runner import WorkerRunner

RATE = 16_000
FRAME = RATE // 50  # 20 ms
REPLY_WAIT_S = 60.0


class Turn:
    def __init__(self, wav: Path, speech_end_s: float) -> None:
        with wave.open(str(wav), "rb") as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
            self.pcm = w.readframes(w.getnframes())
        self.speech_end_s = speech_end_s
        self.speech_end = 0.0
        self.first_audio: float | None = None
        self.transcript: list[str] = []
        self.reply: list[str] = []
        self.replies = 0
        self.answered = asyncio.Event()


class Microphone(FrameProcessor):
    """Plays the turns in as a sound card would: 20 ms frames on a real-time clock."""

    def __init__(self, turns: list[Turn], current: list[int], done: asyncio.Event) -> None:
        super().__init__()
        self.turns, self.current, self.done = turns, current, done
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._feed())

    async def _frame(self, pcm: bytes, at: float) -> None:
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.push_frame(
            InputAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1),
            FrameDirection.DOWNSTREAM,
        )

    async def _feed(self) -> None:
        silence = b"\x00\x00" * FRAME
        clock = time.time() + 0.5
        for i, turn in enumerate(self.turns):
            self.current[0] = i
            turn.speech_end = clock + turn.speech_end_s
            pcm = turn.pcm + b"\x00\x00" * (-len(turn.pcm) // 2 % FRAME)
            for k in range(0, len(pcm), 2 * FRAME):
                await self._frame(pcm[k : k + 2 * FRAME], clock)
                clock += FRAME / RATE
            # Silence, as a quiet room would give, until the reply has started and a moment.
            deadline = time.time() + REPLY_WAIT_S
            while not turn.answered.is_set() and time.time() < deadline:
                await self._frame(silence, clock)
                clock += FRAME / RATE
            for _ in range(100):  # 2 s more: the reply finishes and the turn settles
                await self._frame(silence, clock)
                clock += FRAME / RATE
        self.done.set()


class Tap(FrameProcessor):
    """After the stt: keeps what it heard (the user aggregator consumes transcriptions)."""

    def __init__(self, turns: list[Turn], current: list[int]) -> None:
        super().__init__()
        self.turns, self.current = turns, current

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.turns[self.current[0]].transcript.append(frame.text)
        await self.push_frame(frame, direction)


class Ear(FrameProcessor):
    """The pipeline's end: stamps the first reply audio of each turn, keeps what is said."""

    def __init__(self, turns: list[Turn], current: list[int]) -> None:
        super().__init__()
        self.turns, self.current = turns, current

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        turn = self.turns[self.current[0]]
        if isinstance(frame, TTSAudioRawFrame) and turn.first_audio is None:
            turn.first_audio = time.time()
            turn.answered.set()
        elif isinstance(frame, LLMFullResponseStartFrame):
            turn.replies += 1  # more than one for a WAV: it was cut into several turns
        elif isinstance(frame, TTSTextFrame):
            turn.reply.append(frame.text)
        await self.push_frame(frame, direction)


async def run(spec: dict) -> list[dict]:
    turns = [Turn(Path(t["wav"]), float(t["speech_end_s"])) for t in spec["turns"]]
    current = [0]
    done = asyncio.Event()
    stt = WhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=spec["whisper_dir"], language=Language.EN),
    )
    tts = PiperTTSService(
        download_dir=Path(spec["piper_dir"]),
        settings=PiperTTSService.Settings(voice=spec["piper_voice"]),
    )
    llm = OpenAILLMService(
        base_url=spec["llm_url"],
        api_key="local",
        settings=OpenAILLMService.Settings(
            model="local",
            system_instruction=spec["system_prompt"],
            temperature=spec["temperature"],
            max_tokens=spec["max_tokens"],
        ),
    )
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline(
        [
            Microphone(turns, current, done),
            VADProcessor(vad_analyzer=SileroVADAnalyzer()),
            stt,
            Tap(turns, current),
            aggregators.user(),
            llm,
            tts,
            Ear(turns, current),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(pipeline, idle_timeout_secs=None, enable_rtvi=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    async def finish() -> None:
        await done.wait()
        await worker.queue_frame(EndFrame())

    ender = asyncio.get_running_loop().create_task(finish())
    await runner.run()
    ender.cancel()
    return [
        {
            "speech_end": t.speech_end,
            "first_audio": t.first_audio,
            "voice_to_voice_ms": None
            if t.first_audio is None
            else round(1000.0 * (t.first_audio - t.speech_end), 1),
            "replies": t.replies,
            "transcript": " ".join(x.strip() for x in t.transcript),
            "reply": " ".join(x.strip() for x in t.reply),
        }
        for t in turns
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, type=Path)
    args = p.parse_args()
    spec = json.loads(args.spec.read_text())
    out = asyncio.run(run(spec))
    print(json.dumps({"turns": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
