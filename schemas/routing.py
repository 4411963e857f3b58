"""Who consumes what: every durable consumer of the contract and the events it follows.

Workers serve a set of endpoints (`ENDPOINTS`); a consumer's filters are its event types on
those endpoints only, so the services of `just up` never see a tool run's conversations and
a tool run never sees theirs. A pool (`POOL`) names a separate set of workers (a tool run):
its durables carry the pool's name, so two pools never share a consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.control import Interrupt
from schemas.envelope import subject_filter
from schemas.llm import ReplyCommitted, ReplyDiscarded, ReplyDone, ReplySentence, ReplyStarted
from schemas.mic import VoiceStarted
from schemas.stt import Transcript
from schemas.tts import SentenceDone, TtsAudioChunk, TtsDone, TtsStarted


@dataclass(frozen=True)
class Route:
    """A durable consumer: its name, the event types it takes, and, for a stage that claims
    one unit of work per message (an utterance, a reply), the events of that unit's
    conversation its owner then follows in stream order."""

    name: str
    types: tuple[str, ...]
    """Event types taken ("" = every event)."""
    follows: tuple[str, ...] = ()
    """Event types (or whole stages, "mic.>") of the claimed conversation the owner reads."""
    per_endpoint: bool = False
    """One consumer group per endpoint (a speaker plays only its own endpoint's replies)."""

    def durable(self, pool: str = "", endpoint: str = "", instance: str = "") -> str:
        """The durable name: the route, then the endpoint (per-endpoint routes) or the pool,
        then the instance (per-instance routes such as control consumers)."""
        parts = [self.name]
        if self.per_endpoint:
            parts.append(endpoint)
        elif pool:
            parts.append(pool)
        if instance:
            parts.append(instance)
        return "-".join(p for p in parts if p)

    def filters(self, endpoints: Sequence[str]) -> list[str]:
        """Subject filters of this route on `endpoints`."""
        if not endpoints:
            raise ValueError(f"{self.name}: serves no endpoint")
        types = self.types or (None,)
        return [subject_filter(ep, "*", t) for ep in endpoints for t in types]

    def follow_filters(self, endpoint: str, conversation_id: str) -> list[str]:
        return [subject_filter(endpoint, conversation_id, t) for t in self.follows]


RECORDER = Route("recorder", ())
STT = Route("stt", (VoiceStarted.type,), follows=("mic.>",))
LLM = Route("llm", (Transcript.type,))
#: Per llm instance: an interrupt, a new utterance, an onset that resumes a turn
#: (mic.voice-started.resumes) or a discarded speculation must reach the instance generating.
LLM_CONTROL = Route(
    "llm-control", (Interrupt.type, Transcript.type, ReplyDiscarded.type, VoiceStarted.type)
)
TTS = Route(
    "tts",
    (ReplyStarted.type,),
    follows=(ReplySentence.type, ReplyDone.type, Interrupt.type, ReplyDiscarded.type),
)
SPEAKER = Route(
    "speaker",
    (TtsStarted.type,),
    follows=(
        TtsAudioChunk.type,
        SentenceDone.type,
        TtsDone.type,
        Interrupt.type,
        VoiceStarted.type,
        ReplyCommitted.type,
        ReplyDiscarded.type,
    ),
    per_endpoint=True,
)

ROUTES = (RECORDER, STT, LLM, LLM_CONTROL, TTS, SPEAKER)
