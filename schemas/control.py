"""Control events: barge-in and errors. Handled at once, never queued behind audio."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.envelope import Event, add_endpoint, derive_id, upcaster


class Interrupt(Event):
    """Stop the reply of `utterance_id` now (barge-in or user request)."""

    type: ClassVar[str] = "control.interrupt"
    VERSION: ClassVar[int] = 2

    reason: Literal["barge-in", "user", "shutdown"] = "barge-in"
    by_utterance_id: str = ""
    """The new user utterance that caused a barge-in."""


class ControlError(Event):
    """A stage failed for this turn; the turn ends here unless `retryable`."""

    type: ClassVar[str] = "control.error"
    VERSION: ClassVar[int] = 2

    failed_stage: str = Field(max_length=64)
    """The stage that failed, e.g. "stt"."""
    code: str = Field(max_length=64)
    """Short machine-readable cause, e.g. "model-missing", "audio-gap", "worker-lost"."""
    message: str = Field(max_length=4096)
    cause_event_id: str = ""
    retryable: bool = False

    @classmethod
    def of(
        cls,
        cause: Event,
        stage: str,
        code: str,
        message: str,
        *,
        producer: str,
        event_id: str | None = None,
        retryable: bool = False,
    ) -> ControlError:
        """The error that ends `cause`'s turn, with an id derived from the cause and the code
        (a redelivered cause fails with the same event, which the stream drops)."""
        return cls(
            event_id=event_id or derive_id(cause.event_id, f"{stage}-error", code),
            endpoint=cause.endpoint,
            conversation_id=cause.conversation_id,
            utterance_id=cause.utterance_id,
            producer=producer,
            failed_stage=stage,
            code=code,
            message=message[:4096],
            cause_event_id=cause.event_id,
            retryable=retryable,
        )


for _cls in (Interrupt, ControlError):
    upcaster(_cls.type, 1)(add_endpoint)
