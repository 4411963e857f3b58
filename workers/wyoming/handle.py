"""handle: the llm as a Home Assistant conversation agent.

A Wyoming `transcript` (what the user said, typed or transcribed by Home Assistant) becomes
the final transcript of a new turn of a conversation of the endpoint, bound to be answered
in text only. Home Assistant's `conversation_id` (in the event's context) names the bus
conversation, so every turn of one Home Assistant conversation lands in the same bus
conversation and the llm's memory, rebuilt from the event log, holds the earlier turns.
The reply streams back as handled-chunks and ends with `handled` (what Home Assistant waits
for), the context carrying the conversation id back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from wyoming.asr import Transcript as WyTranscript
from wyoming.event import Event as WyEvent
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop

from schemas import (
    ControlError,
    Event,
    Interrupt,
    ReplyDone,
    ReplyStarted,
    ReplyToken,
    Transcript,
    derive_id,
    new_id,
)
from workers.wyoming.bridge import PRODUCER, Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.errors import RequestError

Send = Callable[[WyEvent], Awaitable[None]]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def bus_conversation(client_conversation_id: str | None) -> str:
    """The bus conversation of a client's conversation id: the same id gives the same
    conversation; a new one (no id) a fresh conversation. Derived, so an id that is not a
    subject token (or that another endpoint uses) cannot spill into other conversations."""
    if not client_conversation_id:
        return new_id()
    return derive_id("wyoming-conversation", client_conversation_id)


class Handling:
    """One handle request: a transcript in, the llm's reply out."""

    def __init__(
        self,
        bridge: Bridge,
        settings: WyomingSettings,
        send: Send,
        session: str,
        request: WyTranscript,
    ) -> None:
        text = (request.text or "").strip()
        if not text:
            raise RequestError("empty-text", "nothing to answer (empty transcript)")
        if len(text) > settings.max_text_chars:
            raise RequestError(
                "text-too-long",
                f"transcript longer than {settings.max_text_chars} characters "
                "(WYOMING_MAX_TEXT_CHARS)",
            )
        self.bridge = bridge
        self.settings = settings
        self.send = send
        self.session = session
        self.text = text
        self.language = request.language or ""
        context = dict(request.context or {})
        client_id = str(context.get("conversation_id") or "")
        self.conversation_id = bus_conversation(client_id)
        # The client keeps its own id; a request without one gets ours to continue with.
        context["conversation_id"] = client_id or self.conversation_id
        self.context: dict[str, Any] = context
        self.utterance_id = new_id()
        self._span, self._ctx = bridge.span("handle", self.conversation_id, self.utterance_id)
        self.queue = bridge.listen(self.conversation_id)
        self.result: asyncio.Task[None] | None = None
        self.finished = False
        self.begun = False

    async def _publish(self, event: Event) -> None:
        await self.bridge.bus.publish(event, ctx=self._ctx)

    async def begin(self) -> None:
        self.result = asyncio.create_task(self._relay())
        self.begun = True
        await self.bridge.bind(self.conversation_id, "llm", self.session)
        await self._publish(
            Transcript(
                endpoint=self.bridge.endpoint,
                conversation_id=self.conversation_id,
                utterance_id=self.utterance_id,
                producer=PRODUCER,
                text=self.text,
                language=self.language.split("-")[0].split("_")[0],
                # The client says which language this is: the llm answers in it.
                language_probability=1.0 if self.language else 0.0,
                confidence=1.0,
            )
        )

    async def _relay(self) -> None:
        started = False
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(self.queue.get(), self.settings.timeout_s)
                except TimeoutError:
                    raise RequestError(
                        "timeout",
                        f"no reply within {self.settings.timeout_s:g} s (is the llm worker "
                        "running?)",
                    ) from None
                if ev.utterance_id != self.utterance_id:
                    continue
                if isinstance(ev, ReplyStarted | ReplyToken) and not started:
                    await self.send(HandledStart(context=self.context).event())
                    started = True
                if isinstance(ev, ReplyToken) and ev.text:
                    await self.send(HandledChunk(text=ev.text).event())
                elif isinstance(ev, ReplyDone):
                    if ev.finish_reason in ("error", "interrupted", "discarded"):
                        raise RequestError(
                            f"llm-{ev.finish_reason}", f"the reply ended: {ev.finish_reason}"
                        )
                    self.finished = True
                    if not started:
                        await self.send(HandledStart(context=self.context).event())
                    await self.send(Handled(text=ev.text.strip(), context=self.context).event())
                    await self.send(HandledStop().event())
                    return
                elif isinstance(ev, ControlError):
                    raise RequestError(f"{ev.failed_stage}-{ev.code}", ev.message)
        finally:
            self.bridge.unlisten(self.conversation_id, self.queue)
            self._span.end()

    async def cancel(self) -> None:
        """The client went away: the llm stops generating for no one."""
        if self.result is not None and not self.result.done():
            self.result.cancel()
        self.bridge.unlisten(self.conversation_id, self.queue)
        if self.begun and not self.finished:
            self.finished = True
            await self._publish(
                Interrupt(
                    event_id=derive_id(self.utterance_id, "interrupt"),
                    endpoint=self.bridge.endpoint,
                    conversation_id=self.conversation_id,
                    utterance_id=self.utterance_id,
                    producer=PRODUCER,
                    reason="user",
                )
            )
