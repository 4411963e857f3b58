"""The common envelope of every event, the type registry, subjects, upcasting and the wire format.

Subjects are `voice.<endpoint>.<conversation>.<stage>.<kind>`: the endpoint a conversation is
spoken from comes first, so a NATS permission (`voice.web.*.mic.>`) or a consumer filter
(`voice.device.*.tts.>`) can be limited to one endpoint's conversations.

Wire format (one NATS message per event):
    body    = <envelope JSON, one line> b"\\n" <binary payload, raw PCM for audio events>
    headers = Nats-Msg-Id (the event id, JetStream de-duplicates on it),
              Voice-Type, W3C traceparent/tracestate.
Compact JSON never contains a raw newline, so the first b"\\n" always ends the envelope
and audio is never base64'd into JSON.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

SUBJECT_ROOT = "voice"
DLQ_ROOT = "dlq"
#: Live-only events (the speaker's echo reference): core NATS, outside the VOICE stream, so
#: they are never stored, recorded or replayed. Same layout under another root.
LIVE_ROOT = "live"

#: Subject tokens: no dots, spaces or wildcards; bounded so subjects stay short.
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Characters no database text column stores (PostgreSQL refuses NUL; surrogates are not UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

#: Largest integer an INTEGER column of the event log holds (PostgreSQL's int4).
MAX_INT32 = 2**31 - 1

#: Largest payload one event may carry (NATS' default max_payload is 1 MiB).
MAX_PAYLOAD_BYTES = 512 * 1024


class EventDecodeError(ValueError):
    """A message that is not a valid event; `reason` is what goes to the dead-letter subject."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_storable(value: Any) -> None:
    """Raise ValueError if a text in `value` (a str, or one inside a model, tuple, list or
    dict) holds a character the event log cannot store."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError(
                "text holds a NUL or an unpaired surrogate, which the event log cannot store"
            )
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            check_storable(item)
    elif isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            check_storable(item)
    elif isinstance(value, dict):
        for k, item in value.items():
            check_storable(k)
            check_storable(item)


def new_id() -> str:
    """A fresh random id (32 hex chars)."""
    return uuid.uuid4().hex


def derive_id(parent: str, *parts: object) -> str:
    """A deterministic id from a parent id and labels.

    Workers derive the ids of the events they emit from the id of the event that caused
    them, so re-processing a redelivered input re-publishes the *same* ids: JetStream
    drops them inside its duplicate window and the event log ignores them after it.
    """
    name = parent + "/" + "/".join(str(p) for p in parts)
    return uuid.uuid5(uuid.NAMESPACE_OID, name).hex


class Event(BaseModel):
    """Base of every event: the envelope. Subclasses add the stage-specific fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: "<stage>.<kind>", e.g. "mic.audio-chunk"; the registry key.
    type: ClassVar[str] = ""
    #: Current schema version of this type; older versions are upcast, newer are refused.
    VERSION: ClassVar[int] = 1
    #: Whether `audio` travels as the binary payload.
    HAS_PAYLOAD: ClassVar[bool] = False

    event_id: Token = Field(default_factory=new_id)
    """Unique id; used as Nats-Msg-Id and as the event log's unique key."""
    endpoint: Token
    """Where the conversation is spoken and heard ("device", "web", "demo-3f2a9c1b", ...):
    every event of a conversation carries the endpoint it was bound to when it started."""
    conversation_id: Token
    """The conversation (session) this event belongs to."""
    utterance_id: Token
    """The turn: the user's utterance and the reply to it share this id."""
    seq: int = Field(default=0, ge=0, le=MAX_INT32)
    """Sequence number per (producer, utterance, type), from 0, without gaps."""
    ts: float = Field(default_factory=time.time)
    """Wall-clock time the event was produced, Unix seconds."""
    producer: str = Field(default="", max_length=64)
    """Name of the producing worker instance, e.g. "stt-1"."""
    schema_version: int = Field(default=0, validate_default=True)
    """Schema version of this event's type: always the class's VERSION (older versions are
    upcast by `decode` before validation, so an event object is always current)."""

    @property
    def stage(self) -> str:
        return self.type.split(".", 1)[0]

    @property
    def kind(self) -> str:
        return self.type.split(".", 1)[1]

    def subject(self) -> str:
        return subject_for(self)

    #: False for events about a whole conversation (no turn of their own).
    TURN_SCOPED: ClassVar[bool] = True

    @field_validator("schema_version", mode="before")
    @classmethod
    def _current_version(cls, v: Any, info: ValidationInfo) -> int:
        # Written from the class: a producer cannot claim another version, and an old event
        # reaches here only after `decode` upcast it to the current one.
        return cls.VERSION

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, v: Any, info: ValidationInfo) -> Any:
        # Every text, nested ones too (a transcript's words): PostgreSQL refuses a NUL on
        # every try, and one such event used to stop the recorder for everyone.
        check_storable(v)
        return v

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("type"):
            register(cls)


class OfGeneration(BaseModel):
    """Mixin of the events of a reply: which generation of the turn's reply they belong to.

    A turn can be answered more than once: speculatively, while the end-pointer still waits
    (then committed or discarded), or again after a crash. Each answer is a generation, named
    by the id of the transcript it answers; only the committed one is heard, kept in memory
    and replayed. "" in events recorded before generations existed."""

    generation: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]{0,64}$")


class PayloadEvent(Event):
    """An event whose `audio` bytes travel as the binary message body, not in JSON."""

    HAS_PAYLOAD: ClassVar[bool] = True

    audio: bytes = Field(default=b"", exclude=True, repr=False)
    """Raw little-endian PCM."""


_REGISTRY: dict[str, type[Event]] = {}


def register(cls: type[Event]) -> type[Event]:
    stage, _, kind = cls.type.partition(".")
    if not (_TOKEN_RE.match(stage) and _TOKEN_RE.match(kind)):
        raise ValueError(f"bad event type {cls.type!r}: want '<stage>.<kind>'")
    if cls.type in _REGISTRY and _REGISTRY[cls.type] is not cls:
        raise ValueError(f"event type {cls.type!r} registered twice")
    _REGISTRY[cls.type] = cls
    return cls


def event_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def subject_for(event: Event) -> str:
    """`voice.<endpoint>.<conversation>.<stage>.<kind>`: one obvious mapping for every event."""
    return f"{SUBJECT_ROOT}.{event.endpoint}.{event.conversation_id}.{event.type}"


def subject_filter(
    endpoint: str = "*", conversation: str = "*", event_type: str | None = None
) -> str:
    """A subject filter, e.g. subject_filter("device", event_type="tts.started"); an event
    type may be a whole stage ("mic.>")."""
    if event_type is None:
        return f"{SUBJECT_ROOT}.{endpoint}.{conversation}.>"
    return f"{SUBJECT_ROOT}.{endpoint}.{conversation}.{event_type}"


def live_subject_for(event: Event) -> str:
    """`live.<endpoint>.<conversation>.<stage>.<kind>`: a live-only event's subject."""
    return f"{LIVE_ROOT}.{event.endpoint}.{event.conversation_id}.{event.type}"


def live_subject_filter(endpoint: str, conversation: str, event_type: str) -> str:
    return f"{LIVE_ROOT}.{endpoint}.{conversation}.{event_type}"


def subject_parts(subject: str) -> tuple[str, str, str] | None:
    """(endpoint, conversation, type) of a voice subject, or None if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != SUBJECT_ROOT:
        return None
    return parts[1], parts[2], f"{parts[3]}.{parts[4]}"


# -- upcasting ----------------------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}

#: The endpoint given to events recorded before events named their endpoint (version 1).
LEGACY_ENDPOINT = "legacy"


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the function that turns version `from_version` of `type_name` (its JSON
    fields, without "type") into version `from_version + 1`."""

    def register_it(fn: Upcaster) -> Upcaster:
        key = (type_name, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"two upcasters for {type_name} v{from_version}")
        _UPCASTERS[key] = fn
        return fn

    return register_it


def upcast(type_name: str, data: dict[str, Any], version: int, target: int) -> dict[str, Any]:
    """Apply the upcasters of `type_name` from `version` up to `target`."""
    while version < target:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise EventDecodeError(f"{type_name}: no upcaster from schema version {version}")
        data = step(dict(data))
        version += 1
    return data


def add_endpoint(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of every type that existed before endpoints: the envelope gained `endpoint`."""
    data.setdefault("endpoint", LEGACY_ENDPOINT)
    return data


def dlq_subject(role: str, consumer: str) -> str:
    """Where a role's consumer dead-letters: the role is its own token, so NATS can let each
    role write only its own dead letters."""
    return f"{DLQ_ROOT}.{role}.{consumer}"


def encode(event: Event) -> bytes:
    """Event -> message body."""
    head = event.model_dump_json().encode()
    # Type goes first in the object so a human reading `nats sub` sees it at once.
    body = b'{"type":"' + event.type.encode() + b'",' + head[1:]
    if event.HAS_PAYLOAD:
        return body + b"\n" + event.audio  # type: ignore[attr-defined]
    return body


def decode(body: bytes) -> Event:
    """Message body -> typed, validated event; raises EventDecodeError with a reason."""
    if len(body) > MAX_PAYLOAD_BYTES + 64 * 1024:
        raise EventDecodeError(f"message too large: {len(body)} bytes")
    head, sep, payload = body.partition(b"\n")
    try:
        data = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"envelope is not JSON: {exc}") from None
    except RecursionError:  # nested thousands deep: would escape and kill the consumer loop
        raise EventDecodeError("envelope is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise EventDecodeError("envelope is not a JSON object")
    type_name = data.pop("type", None)
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event type {type_name!r}")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1 or version > cls.VERSION:
        raise EventDecodeError(
            f"{type_name}: unknown schema version {version!r} (this build knows <= {cls.VERSION})"
        )
    if version < cls.VERSION:
        data = upcast(type_name, data, version, cls.VERSION)
    if cls.HAS_PAYLOAD:
        if not sep:
            raise EventDecodeError(f"{type_name}: missing binary payload separator")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise EventDecodeError(f"{type_name}: payload of {len(payload)} bytes too large")
        data["audio"] = payload
    elif sep:
        raise EventDecodeError(f"{type_name}: unexpected payload after the envelope")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # A field name comes from the message itself: a corrupted one may hold a newline,
        # and the reason is one line of a dead letter and a log.
        where = _one_line(".".join(str(p) for p in first["loc"])) or "event"
        raise EventDecodeError(
            f"{type_name}: invalid {where}: {_one_line(first['msg'])} "
            f"({exc.error_count()} error(s))"
        ) from None


def _one_line(text: str, limit: int = 120) -> str:
    """`text` with control characters escaped (\\n, \\x00, ...), at most `limit` chars."""
    return text.encode("unicode_escape").decode("ascii")[:limit]
