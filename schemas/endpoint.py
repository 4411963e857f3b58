"""Endpoint stage: where a conversation is spoken and heard, bound once when it starts."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.envelope import Event, derive_id

#: How far a conversation's turns go: its last stage.
LastStage = Literal["stt", "llm", "speaker"]


class ConversationStarted(Event):
    """Binds a conversation to its endpoint (the envelope's `endpoint`), for its whole life.

    Published by the endpoint before the first event of the conversation, with an id derived
    from the conversation id: a second binding of the same conversation is a duplicate that
    JetStream and the event log drop, so the first endpoint keeps it. By convention the
    `utterance_id` is the conversation id (this event belongs to no turn)."""

    type: ClassVar[str] = "endpoint.conversation-started"
    TURN_SCOPED: ClassVar[bool] = False

    medium: Literal["device", "file", "web", "wyoming", "text"]
    """What the endpoint is: a sound card, a WAV file run, a browser tab, a Wyoming client,
    typed text (`just ask`, `just say`)."""
    session: str = Field(default="", max_length=64)
    """Which one of the endpoint's sessions, e.g. a browser tab; "" if it has one."""
    last_stage: LastStage = "speaker"
    """How far turns go: "stt" transcribes only, "llm" answers in text, "speaker" speaks
    the answer at the endpoint. Workers past the last stage leave the conversation alone."""
    replay_of: str = Field(default="", max_length=64)
    """The conversation this one replays, if any."""

    @model_validator(mode="after")
    def _conversation_scoped(self) -> ConversationStarted:
        if self.utterance_id != self.conversation_id:
            raise ValueError("utterance_id must be the conversation id (no turn of its own)")
        return self

    @property
    def label(self) -> str:
        """The endpoint as people read it, e.g. "web:3f2a"."""
        return f"{self.endpoint}:{self.session}" if self.session else self.endpoint

    def goes_to(self, stage: str) -> bool:
        """Whether turns of this conversation reach `stage` ("llm", "tts", "speaker")."""
        order = ("stt", "llm", "tts", "speaker")
        last = "speaker" if self.last_stage == "speaker" else self.last_stage
        return order.index(stage) <= order.index(last)


def binding(
    endpoint: str,
    conversation_id: str,
    medium: str,
    *,
    last_stage: str = "speaker",
    session: str = "",
    producer: str = "",
    replay_of: str = "",
) -> ConversationStarted:
    """The binding event of a conversation, with its one deterministic id."""
    return ConversationStarted(
        event_id=derive_id(conversation_id, "conversation-started"),
        endpoint=endpoint,
        conversation_id=conversation_id,
        utterance_id=conversation_id,
        producer=producer,
        medium=medium,  # type: ignore[arg-type]
        last_stage=last_stage,  # type: ignore[arg-type]
        session=session,
        replay_of=replay_of,
    )
