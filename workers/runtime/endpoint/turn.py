"""End-of-turn models: is the user done, or only pausing?

Smart Turn v3.2 (Pipecat, BSD-2) is an audio classifier over the last 8 s of the turn; its
CPU ONNX file ships inside the `pipecat-ai` wheel and runs here on onnxruntime alone
(`pip install --no-deps pipecat-ai==1.14.0`: none of Pipecat is imported). A pause after "I
would like to order" scores low, a finished question high. Intonation alone does not settle
every pause ("Set a timer for" can score high), so the transcript's last word may overrule
a "complete" (`ends_unfinished`).
"""

from __future__ import annotations

import re
import time
from typing import Protocol

import numpy as np

from workers.runtime.endpoint.vad import RATE

SMART_TURN_DIST = "pipecat-ai"
SMART_TURN_PATH = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
#: The model sees this much of the turn, the most recent part, left-padded with zeros.
WINDOW_S = 8
FRAMES = WINDOW_S * 100  # Whisper log-mel: 10 ms hop


class TurnModel(Protocol):
    name: str

    def score(self, audio: np.ndarray) -> float:
        """P(the turn is complete) for a turn's int16 16 kHz audio, trailing pause included."""
        ...


class SmartTurn:
    """Smart Turn v3.2 on onnxruntime: Whisper log-mel (80 bins, 8 s) -> one probability."""

    name = "smart-turn-v3.2"

    def __init__(self) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        from workers.runtime.models import bundled_path

        path = bundled_path(
            SMART_TURN_DIST,
            SMART_TURN_PATH,
            hint="Smart Turn v3.2: `pip install --no-deps pipecat-ai==1.14.0`",
        )
        opts = ort.SessionOptions()
        # One call every pause, ~10-80 ms: one thread leaves the other core to the stt.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        self.score(np.zeros(RATE, np.int16))  # first run allocates: not on a user's pause

    def features(self, audio: np.ndarray) -> np.ndarray:
        n = WINDOW_S * RATE
        x = audio[-n:].astype(np.float32) / 32768.0
        x = np.pad(x, (n - len(x), 0))
        # The model was trained on normalised input (transformers' do_normalize): without
        # this its scores are wrong.
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        f = self._features(x, padding=0)[:, :FRAMES]
        if f.shape[1] < FRAMES:
            f = np.pad(f, ((0, 0), (FRAMES - f.shape[1], 0)))
        return f[None].astype(np.float32)

    def score(self, audio: np.ndarray) -> float:
        out = self._session.run(None, {"input_features": self.features(audio)})[0]
        return float(min(1.0, max(0.0, np.ravel(out)[0])))


def timed_score(model: TurnModel, audio: np.ndarray) -> tuple[float, float]:
    """(score, milliseconds it took): timed per call, not kept on the model, which the web
    gateway's tabs share across threads."""
    t0 = time.perf_counter()
    score = model.score(audio)
    return score, 1000.0 * (time.perf_counter() - t0)


#: Words a finished English sentence rarely ends with: an article, a preposition, a
#: conjunction, a possessive, an auxiliary. "Set a timer for" is not a turn, whatever its tone.
#: Kept short: a word that can end a sentence ("please", "this", "it") would hold finished
#: turns open until MIC_TURN_MAX_SILENCE_MS.
UNFINISHED = frozenset(
    """a an the for to of in on at by with from into onto about than as and or but nor
    because if my your his her its our their is are was were be been am will would can
    could should shall may might must""".split()
)


def last_word(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    return words[-1] if words else ""


def ends_unfinished(text: str) -> bool:
    """The transcript stops where a sentence cannot: a trailing ellipsis or dash, or a
    function word ("for", "the", "and", "my")."""
    t = text.strip()
    if not t:
        return False
    if t.endswith(("...", "…", "-", "—", ",")):
        return True
    return last_word(t) in UNFINISHED


def make_turn_model(policy: str) -> TurnModel | None:
    if policy == "vad":
        return None
    if policy == "smart":
        return SmartTurn()
    raise ValueError(f"MIC_TURN={policy}: want smart or vad")
