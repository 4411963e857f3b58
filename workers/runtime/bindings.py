"""Which endpoint a conversation belongs to and how far its turns go, from its binding
event (`endpoint.conversation-started`) on the stream.

A binding never changes, so each is looked up once per process (the last message on the
conversation's binding subject) and kept.
"""

from __future__ import annotations

import collections
import contextlib
import logging

import nats.errors
import nats.js.errors

from schemas import ConversationStarted, EventDecodeError, decode, subject_filter
from workers.runtime.bus import Bus

log = logging.getLogger("voicebus.bindings")
MAX_CACHED = 4096


class Bindings:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._known: collections.OrderedDict[tuple[str, str], ConversationStarted | None] = (
            collections.OrderedDict()
        )

    async def of(self, endpoint: str, conversation_id: str) -> ConversationStarted | None:
        """The binding, or None for a conversation that has none (recorded before bindings
        existed, or published by hand): such conversations get every stage."""
        key = (endpoint, conversation_id)
        if key in self._known:
            return self._known[key]
        found: ConversationStarted | None = None
        subject = subject_filter(endpoint, conversation_id, ConversationStarted.type)
        try:
            msg = await self.bus.js.get_last_msg(self.bus.stream, subject)
        except nats.js.errors.NotFoundError:
            msg = None  # never bound
        except (nats.errors.Error, TimeoutError) as exc:
            # Unknown is not "unbound": do not remember it, ask again next time.
            log.warning("binding lookup failed", extra={"error": repr(exc)})
            return None
        if msg is not None:
            with contextlib.suppress(EventDecodeError):
                event = decode(msg.data)
                if isinstance(event, ConversationStarted):
                    found = event
        self._known[key] = found
        while len(self._known) > MAX_CACHED:
            self._known.popitem(last=False)
        return found

    async def goes_to(self, endpoint: str, conversation_id: str, stage: str) -> bool:
        """Whether turns of this conversation reach `stage`."""
        b = await self.of(endpoint, conversation_id)
        return b is None or b.goes_to(stage)
