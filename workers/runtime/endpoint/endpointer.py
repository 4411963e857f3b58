"""End-pointing: turns a stream of PCM into utterances (start, fixed-size chunks, stop).

Pure and synchronous so it is tested without a bus. Decisions are made per VAD frame;
audio leaves in chunks of `chunk_ms`, the last one padded with silence to full size.

When a turn ends is a policy (`EndpointConfig.turn`): "vad" ends it after a fixed silence
(`hangover_ms`); "smart" asks an end-of-turn model after a short silence and ends the turn
then if the model says it is complete, or waits up to `max_silence_ms` if not. A transcript
of the speech so far (`hint`, the stt's speculative transcript) may overrule a "complete"
that stops on "for" or "the". Every decision leaves as a `Decision` segment.

No end-of-turn rule is right every time: a pause after "Set a timer for" can sound final and
be transcribed as a finished sentence. So a turn that ended is not closed for good: speech
that starts again within `resume_ms` of its end of speech resumes it. The new utterance then
holds the whole sentence (the ended one's audio, the pause, the new speech), and says which
turn it continues (`Started.resumes`), so that turn's answer is dropped and the whole sentence
is answered once.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

import numpy as np

from workers.runtime.endpoint.turn import TurnModel, ends_unfinished, timed_score
from workers.runtime.endpoint.vad import RATE, Vad


@dataclass(frozen=True)
class Started:
    stream_offset_ms: float
    """Onset of speech in the source stream."""
    preroll_ms: float
    """Audio before the onset included in the utterance."""
    resumes: bool = False
    """Continues the utterance that ended last (the user went on speaking within
    `resume_ms`): its audio, from that utterance's start, and the pause come first, as
    pre-roll."""


@dataclass(frozen=True)
class Chunk:
    seq: int
    pcm: bytes
    offset_ms: float
    """Position of the chunk in the utterance."""


@dataclass(frozen=True)
class Stopped:
    reason: Literal["silence", "max-length", "end-of-stream"]
    chunks: int
    duration_ms: float
    speech_end_offset_ms: float
    """Where speech ended inside the utterance (before the hangover)."""


@dataclass(frozen=True)
class Decision:
    """Whether the turn ends at this pause, and why (published as mic.turn-decision)."""

    outcome: Literal["end", "wait"]
    reason: Literal[
        "hangover", "model-complete", "model-incomplete", "transcript-incomplete", "max-silence"
    ]
    policy: Literal["vad", "smart"]
    silence_ms: float
    audio_ms: float
    score: float | None = None
    threshold: float = 0.5
    model_ms: float = 0.0
    transcript_tail: str = ""


@dataclass(frozen=True)
class ScoreRequest:
    """Ask the end-of-turn model about the current pause (`Endpointer.defer_scoring`): run
    `turn_model.score(audio)` off the caller's loop and hand the answer to
    `Endpointer.scored(token, ...)`."""

    token: int
    audio: np.ndarray


Segment = Started | Chunk | Decision | Stopped | ScoreRequest


@dataclass
class _Ended:
    """An utterance that a new onset may still resume."""

    audio: list[np.ndarray]
    """Its audio from its start, unpadded."""
    after: list[np.ndarray]
    """The stream since it ended (VAD frames)."""
    speech_end: int
    """Stream sample where its speech ended."""
    stream_offset_ms: float
    preroll_ms: float


@dataclass(frozen=True)
class EndpointConfig:
    chunk_ms: int = 20
    preroll_ms: int = 300
    min_speech_ms: int = 64
    hangover_ms: int = 400
    max_utterance_ms: int = 20_000
    threshold: float = 0.5
    """Speech starts above this probability..."""
    hysteresis: float = 0.15
    """...and continues while above threshold - hysteresis (Silero's own rule)."""
    turn: Literal["vad", "smart"] = "vad"
    """When a turn ends: after `hangover_ms` of silence ("vad"), or when the end-of-turn
    model says so ("smart")."""
    min_silence_ms: int = 200
    """smart: silence from which a turn may end."""
    score_ahead_ms: int = 0
    """smart: ask the model this much silence before `min_silence_ms`, the rest of that
    silence made up from the quiet heard so far, so that its answer is ready when the
    silence is (the model takes ~40 ms alone, 60-150 ms beside the stt's decodes); 0 =
    ask at `min_silence_ms`."""
    max_silence_ms: int = 1200
    """smart: silence that ends a turn whatever the model says."""
    turn_threshold: float = 0.5
    """smart: model score at or above which the turn is complete."""
    transcript_wait_ms: int = 0
    """smart: after a "complete", wait this much more silence for a transcript of the speech
    (`Endpointer.hint`) to check its last word; 0 = never wait for one."""
    resume_ms: int = 0
    """Speech starting within this much of the last turn's end of speech continues that
    turn (`Started.resumes`); 0 = every onset starts a new turn."""


#: How soon after a turn's end of speech a new onset resumes it by default (mic and web): a
#: sentence paused for 600-700 ms ("Set a timer for ... ten minutes") is one turn, a
#: second question asked a second later is its own.
RESUME_MS = 800

#: smart: how long a "complete" waits for the stt's transcript by default (mic and web):
#: up to the max silence, since the answer cannot start before that transcript anyway.
SMART_TRANSCRIPT_WAIT_MS = 1000

#: smart: how far ahead of the min silence the model is asked by default (mic and web).
#: Not ahead: on 2 cores the reply waits for the stt's decode at the pause, not for the
#: decision, and a model run beside that decode slowed it (README: End of turn).
SMART_SCORE_AHEAD_MS = 0

#: The end of speech is the last 10 ms of the utterance within this many dB of its loudest:
#: the VAD's last voiced frame runs past it (a frame is 32 ms and its probability lags the
#: voice), and a quiet final consonant ("France?") is still speech the listener hears.
END_FLOOR_DB = -45.0
END_WINDOW_MS = 10
#: How far back from the VAD's last voiced frame the acoustic end is looked for.
END_LOOKBACK_MS = 300


class AcousticEnd:
    """Tracks an utterance's loudness in 10 ms windows to place its end of speech where the
    voice really stops, not where the VAD's last voiced frame ends."""

    def __init__(self) -> None:
        self.window = RATE * END_WINDOW_MS // 1000
        self._rms: list[float] = []
        """Per window of the utterance (at most 20 s: 2000 floats)."""
        self._partial = np.zeros(0, dtype=np.float32)
        self._peak = 0.0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def add(self, audio: np.ndarray) -> None:
        x = np.concatenate([self._partial, audio.astype(np.float32)])
        n = len(x) // self.window
        if n:
            w = x[: n * self.window].reshape(n, self.window)
            rms = np.sqrt(np.mean(w * w, axis=1))
            self._rms.extend(rms.tolist())
            self._peak = max(self._peak, float(rms.max()))
        self._partial = x[n * self.window :]

    def refine(self, vad_end_samples: int) -> int:
        """The end of speech, in samples from the utterance start, at or before the VAD's."""
        if self._peak <= 0:
            return vad_end_samples
        floor = self._peak * 10 ** (END_FLOOR_DB / 20)
        last_window = min(len(self._rms), vad_end_samples // self.window) - 1
        oldest = max(0, last_window - END_LOOKBACK_MS // END_WINDOW_MS)
        for i in range(last_window, oldest - 1, -1):
            if self._rms[i] >= floor:
                return min(vad_end_samples, (i + 1) * self.window)
        return vad_end_samples  # nothing loud near the VAD's end: keep the VAD's word


class Endpointer:
    def __init__(
        self, vad: Vad, config: EndpointConfig | None = None, turn_model: TurnModel | None = None
    ) -> None:
        self.vad = vad
        self.cfg = config or EndpointConfig()
        if self.cfg.turn == "smart" and turn_model is None:
            raise ValueError("turn=smart needs an end-of-turn model")
        self.turn_model = turn_model if self.cfg.turn == "smart" else None
        self.defer_scoring = False
        """True: the model is not run inside `feed`; a `ScoreRequest` segment asks for it
        and the pause is decided when `scored` brings the answer (the capture sets this: it
        runs the model on a thread while audio keeps flowing)."""
        self._asks = 0
        if self.cfg.chunk_ms <= 0 or (RATE * self.cfg.chunk_ms) % 1000:
            raise ValueError(f"chunk_ms={self.cfg.chunk_ms}: want a whole number of samples")
        self.chunk_samples = RATE * self.cfg.chunk_ms // 1000
        self.frame_samples = vad.frame_samples
        self.frame_ms = 1000.0 * self.frame_samples / RATE
        self._resume_samples = RATE * self.cfg.resume_ms // 1000
        self._pending = np.zeros(0, dtype=np.int16)  # not yet a whole VAD frame
        self._stream_samples = 0  # samples seen by the VAD
        preroll_frames = int(np.ceil(self.cfg.preroll_ms / self.frame_ms))
        self._min_frames = max(1, int(np.ceil(self.cfg.min_speech_ms / self.frame_ms)))
        self._resume_horizon = self._resume_samples + (self._min_frames + 1) * self.frame_samples
        self._ring: collections.deque[np.ndarray] = collections.deque(
            maxlen=preroll_frames + self._min_frames
        )
        self._speech_frames = 0
        self.in_utterance = False
        self._utt = np.zeros(0, dtype=np.int16)  # not yet emitted as a chunk
        self._utt_samples = 0
        self._seq = 0
        self._silence_ms = 0.0
        self._speech_end_samples = 0
        self._loudness = AcousticEnd()
        self._heard: list[np.ndarray] = []
        """The utterance's audio so far, for the end-of-turn model (at most 20 s)."""
        self._hint = ("", 0.0)
        """(text, audio_ms) of the latest transcript of this utterance."""
        self._pause: dict[str, object] = {}
        """What was decided at the current pause ({} while speech goes on)."""
        self._audio: list[np.ndarray] = []
        """The open utterance's audio, unpadded (resume_ms: kept past its end)."""
        self._ended: _Ended | None = None
        """The last utterance, while speech starting now would resume it."""
        self._onset = (0.0, 0.0)
        """(stream offset, preroll) ms of the open utterance's Started."""

    def hint(self, text: str, audio_ms: float) -> list[Segment]:
        """A transcript of the first `audio_ms` of the current utterance (the stt's
        speculative one): its last word may overrule the model at this pause. A pause that
        only waited for it is decided at once (the segments that follow)."""
        if not self.in_utterance:
            return []
        self._hint = (text, audio_ms)
        return self._reconsider()

    @property
    def awaiting_score(self) -> bool:
        """The pause is long enough to be decided and waits for the model's answer only."""
        pause = self._pause
        return (
            self.in_utterance
            and "asked" in pause
            and "score" not in pause
            and self._silence_ms >= self.cfg.min_silence_ms
        )

    def scored(self, token: int, score: float, model_ms: float = 0.0) -> list[Segment]:
        """The model's answer to `ScoreRequest(token)`; the pause it was asked about is
        decided now if it is long enough (an answer about a pause speech has ended since
        is dropped)."""
        if not self.in_utterance or self._pause.get("asked") != token:
            return []
        self._pause["score"] = score
        self._pause["model_ms"] = model_ms
        return self._reconsider()

    def _reconsider(self) -> list[Segment]:
        out: list[Segment] = []
        if self._silence_ms >= self.cfg.min_silence_ms and "outcome" not in self._pause:
            if self._turn_over(out):
                self._stop("silence", out)
        return out

    def feed(self, pcm: np.ndarray | bytes) -> list[Segment]:
        a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else pcm
        buf = np.concatenate([self._pending, a.astype(np.int16, copy=False)])
        out: list[Segment] = []
        n = len(buf) // self.frame_samples * self.frame_samples
        for i in range(0, n, self.frame_samples):
            self._frame(buf[i : i + self.frame_samples], out)
        self._pending = buf[n:]
        return out

    def flush(self) -> list[Segment]:
        """End of the stream: close an open utterance with reason end-of-stream."""
        out: list[Segment] = []
        if self.in_utterance:
            self._append(self._pending, out)
            self._stop("end-of-stream", out)
        self._pending = np.zeros(0, dtype=np.int16)
        return out

    def _frame(self, frame: np.ndarray, out: list[Segment]) -> None:
        p = self.vad.prob(frame)
        self._stream_samples += len(frame)
        if not self.in_utterance:
            self._ring.append(frame)
            if self._ended is not None:
                self._ended.after.append(frame)
                # (an onset is dated to its first speech frame, found min_speech_ms later)
                if self._stream_samples - self._ended.speech_end > self._resume_horizon:
                    self._ended = None  # the pause is a turn's end now, whatever follows
            self._speech_frames = self._speech_frames + 1 if p >= self.cfg.threshold else 0
            if self._speech_frames >= self._min_frames:
                self._start(out)
            return
        self._append(frame, out)
        if p >= self.cfg.threshold - self.cfg.hysteresis:
            self._silence_ms = 0.0
            self._speech_end_samples = self._utt_samples
            self._pause = {}
        else:
            self._silence_ms += self.frame_ms
        if self._silence_ms > 0 and self._turn_over(out):
            self._stop("silence", out)
        elif self._utt_samples >= RATE * self.cfg.max_utterance_ms // 1000:
            self._stop("max-length", out)

    def _turn_over(self, out: list[Segment]) -> bool:
        cfg, silence = self.cfg, self._silence_ms
        if self.turn_model is None:
            if silence < cfg.hangover_ms:
                return False
            return self._decide(out, "end", "hangover")
        pause = self._pause
        if silence >= cfg.max_silence_ms:
            return self._decide(out, "end", "max-silence", pause.get("score"))  # type: ignore[arg-type]
        if pause.get("outcome") == "wait":
            return False
        if "asked" not in pause and silence >= cfg.min_silence_ms - cfg.score_ahead_ms:
            self._ask(out)
        if silence < cfg.min_silence_ms or "score" not in pause:
            return False
        score = float(pause["score"])  # type: ignore[arg-type]
        if score < cfg.turn_threshold:
            return self._decide(out, "wait", "model-incomplete", score)
        text = self._fresh_hint()
        if text is None and silence < cfg.min_silence_ms + cfg.transcript_wait_ms:
            return False  # the model says complete: a transcript may still say otherwise
        if text and ends_unfinished(text):
            return self._decide(out, "wait", "transcript-incomplete", score, text)
        return self._decide(out, "end", "model-complete", score, text or "")

    def _ask(self, out: list[Segment]) -> None:
        """Ask the model about this pause as it will be at `min_silence_ms`: the silence
        still to come is made up from the quiet heard since the speech stopped."""
        assert self.turn_model is not None
        audio = np.concatenate(self._heard) if self._heard else np.zeros(0, np.int16)
        heard = round(self._silence_ms / self.frame_ms)
        due = int(np.ceil(self.cfg.min_silence_ms / self.frame_ms))
        if 0 < heard < due:
            quiet = audio[-heard * self.frame_samples :]
            audio = np.concatenate([audio, np.resize(quiet, (due - heard) * self.frame_samples)])
        self._asks += 1
        self._pause["asked"] = self._asks
        if self.defer_scoring:
            out.append(ScoreRequest(self._asks, audio))
            return
        self._pause["score"], self._pause["model_ms"] = timed_score(self.turn_model, audio)

    def _fresh_hint(self) -> str | None:
        """The transcript's text if it saw all the speech so far, else None."""
        text, audio_ms = self._hint
        end_ms = 1000.0 * self._loudness.refine(self._speech_end_samples) / RATE
        return text if text and audio_ms >= end_ms else None

    def _decide(
        self,
        out: list[Segment],
        outcome: Literal["end", "wait"],
        reason: Literal[
            "hangover", "model-complete", "model-incomplete", "transcript-incomplete", "max-silence"
        ],
        score: float | None = None,
        text: str = "",
    ) -> bool:
        self._pause["outcome"] = outcome
        tail = " ".join(text.split()[-4:]) if text else ""
        out.append(
            Decision(
                outcome=outcome,
                reason=reason,
                policy=self.cfg.turn,
                silence_ms=self._silence_ms,
                audio_ms=1000.0 * self._utt_samples / RATE,
                score=score,
                threshold=self.cfg.turn_threshold,
                model_ms=float(self._pause.get("model_ms", 0.0)),  # type: ignore[arg-type]
                transcript_tail=tail[-256:],
            )
        )
        return outcome == "end"

    def _start(self, out: list[Segment]) -> None:
        audio = np.concatenate(list(self._ring))
        speech = self._speech_frames * self.frame_samples
        onset = self._stream_samples - speech
        ended, self._ended = self._ended, None
        self.in_utterance = True
        self._loudness.reset()
        self._seq = 0
        self._utt = np.zeros(0, dtype=np.int16)
        self._utt_samples = 0
        self._silence_ms = 0.0
        self._ring.clear()
        self._speech_frames = 0
        self._heard = []
        self._audio = []
        self._hint = ("", 0.0)
        self._pause = {}
        if ended is not None and onset - ended.speech_end <= self._resume_samples:
            # The same turn goes on: its audio from its start, the pause, the new speech
            # (the ring is the tail of what came after it), so the stt hears one sentence.
            whole = np.concatenate([*ended.audio, *ended.after])
            if len(whole) + RATE <= RATE * self.cfg.max_utterance_ms // 1000:
                # The onset is the new speech's; all before it (the cut turn, the pause) is
                # its pre-roll: audio from the past, published at once.
                start_ms = ended.stream_offset_ms - ended.preroll_ms
                onset_ms = 1000.0 * onset / RATE
                self._onset = (onset_ms, onset_ms - start_ms)
                out.append(Started(*self._onset, resumes=True))
                self._append(whole, out)
                self._speech_end_samples = self._utt_samples
                return
        self._onset = (1000.0 * onset / RATE, 1000.0 * (len(audio) - speech) / RATE)
        out.append(Started(*self._onset))
        self._append(audio, out)
        self._speech_end_samples = self._utt_samples

    def _append(self, audio: np.ndarray, out: list[Segment]) -> None:
        self._loudness.add(audio)
        if self.turn_model is not None:
            self._heard.append(audio)
        if self._resume_samples:
            self._audio.append(audio)
        self._utt = np.concatenate([self._utt, audio])
        self._utt_samples += len(audio)
        n = len(self._utt) // self.chunk_samples * self.chunk_samples
        for i in range(0, n, self.chunk_samples):
            self._emit(self._utt[i : i + self.chunk_samples], out)
        self._utt = self._utt[n:]

    def _emit(self, chunk: np.ndarray, out: list[Segment]) -> None:
        offset = 1000.0 * self._seq * self.chunk_samples / RATE
        out.append(Chunk(self._seq, chunk.astype("<i2").tobytes(), offset))
        self._seq += 1

    def _stop(self, reason: Literal["silence", "max-length", "end-of-stream"], out) -> None:  # type: ignore[no-untyped-def]
        if len(self._utt):
            pad = np.zeros(self.chunk_samples - len(self._utt), dtype=np.int16)
            self._emit(np.concatenate([self._utt, pad]), out)
        out.append(
            Stopped(
                reason=reason,
                chunks=self._seq,
                duration_ms=1000.0 * self._seq * self.chunk_samples / RATE,
                speech_end_offset_ms=1000.0
                * self._loudness.refine(self._speech_end_samples)
                / RATE,
            )
        )
        if self._resume_samples and reason == "silence":
            end = self._loudness.refine(self._speech_end_samples)
            self._ended = _Ended(
                audio=self._audio,
                after=[],
                speech_end=self._stream_samples - (self._utt_samples - end),
                stream_offset_ms=self._onset[0],
                preroll_ms=self._onset[1],
            )
        self.in_utterance = False
        self._utt = np.zeros(0, dtype=np.int16)
        self._utt_samples = 0
        self._silence_ms = 0.0
        self._heard = []
        self._audio = []
        self._hint = ("", 0.0)
        self._pause = {}
        # The VAD's RNN state is kept: it is a continuous stream, not a new one.
