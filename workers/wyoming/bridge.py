"""The bus side of the bridge: one connection as the `wyoming` role, one subscription to the
endpoint's events, each handed to the request waiting for its conversation.

A request registers its conversation before publishing anything, so no reply can arrive
unseen: core NATS delivers what is published after the subscription, in order, and the
workers' events for a conversation come only after the request's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from nats.aio.msg import Msg
from opentelemetry import context as otel_context
from opentelemetry import trace

from schemas import Event, EventDecodeError, binding, decode, subject_filter
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.streams import require_streams
from workers.runtime.telemetry import tracer
from workers.wyoming.config import ENDPOINT

log = logging.getLogger("voicebus.wyoming")

PRODUCER = "wyoming"


class Bridge:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.endpoint = ENDPOINT
        self._queues: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)
        self._sub = None

    @classmethod
    async def connect(cls, settings: Settings) -> Bridge:
        bus = await Bus.connect(settings.for_worker(PRODUCER), name=PRODUCER)
        await require_streams(bus)
        bridge = cls(bus)
        bridge._sub = await bus.nc.subscribe(
            subject_filter(ENDPOINT), cb=bridge._on_msg, pending_bytes_limit=-1
        )
        return bridge

    async def _on_msg(self, msg: Msg) -> None:
        queues = self._queues.get(msg.subject.split(".", 3)[2])
        if not queues:
            return
        try:
            event = decode(msg.data)
        except EventDecodeError:
            return  # the recorder dead-letters it; nothing here to answer with
        for q in queues:
            q.put_nowait(event)

    def listen(self, conversation_id: str) -> asyncio.Queue[Event]:
        """The conversation's events from now on, until `unlisten`."""
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._queues[conversation_id].add(q)
        return q

    def unlisten(self, conversation_id: str, q: asyncio.Queue[Event]) -> None:
        queues = self._queues.get(conversation_id)
        if queues is not None:
            queues.discard(q)
            if not queues:
                del self._queues[conversation_id]

    def span(
        self, name: str, conversation_id: str, utterance_id: str
    ) -> tuple[trace.Span, otel_context.Context]:
        """The root span of one request's turn: every stage's span joins it through the
        trace context published with the request's events."""
        span = tracer("voicebus.wyoming").start_span(
            name,
            attributes={
                "conversation_id": conversation_id,
                "utterance_id": utterance_id,
                "endpoint": self.endpoint,
            },
        )
        return span, trace.set_span_in_context(span)

    async def bind(self, conversation_id: str, last_stage: str, session: str) -> None:
        """Bind a conversation to the endpoint (a second binding is a duplicate, dropped)."""
        await self.bus.publish(
            binding(
                self.endpoint,
                conversation_id,
                "wyoming",
                last_stage=last_stage,
                session=session,
                producer=PRODUCER,
            )
        )

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await self.bus.close()
