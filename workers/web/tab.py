"""One browser tab: one conversation of the "web" endpoint.

Upstream, the tab sends 20 ms frames of 16 kHz int16 (binary: the capture time of the last
sample as float64 ms since the epoch on the browser's clock, then one or more frames of 640
bytes; several only while all is quiet) and small JSON messages (played counts, talk
on/off). The frames go through the shared `Capture`, stamped with the browser's capture
time, so "when speech really ended" includes the browser's audio path.

Downstream, the tab gets the conversation's events as small JSON (transcripts, reply text,
playback, the turn's waterfall) and the reply audio (workers.web.sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import schemas as s
from workers.runtime.bus import Bus
from workers.runtime.endpoint.capture import Capture
from workers.runtime.endpoint.endpointer import Endpointer
from workers.web.sink import BrowserOutput, audio_frame

log = logging.getLogger("voicebus.web")

FRAME_SAMPLES = 320
"""20 ms at 16 kHz: the page sends whole frames."""
FRAME_BYTES = 2 * FRAME_SAMPLES
MAX_FRAMES = 10
"""Frames one message may hold (the page holds five while all is quiet)."""

#: What the page is told about (audio chunks stay server-side).
FORWARDED = (
    s.VoiceStarted,
    s.VoiceStopped,
    s.TranscriptPartial,
    s.Transcript,
    s.ReplyStarted,
    s.ReplySentence,
    s.ReplyCommitted,
    s.ReplyDiscarded,
    s.ReplyDone,
    s.PlaybackStarted,
    s.PlaybackDone,
    s.Interrupt,
    s.ControlError,
)


def page_event(e: s.Event) -> dict[str, Any]:
    """An event as the page reads it: its envelope fields that matter and its own fields."""
    body = e.model_dump(mode="json", exclude={"endpoint", "producer", "schema_version"})
    body.pop("words", None)
    body["type"] = e.type
    return body


class Tab:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        bus: Bus,
        endpoint: str,
        conversation_id: str,
        session: str,
        endpointer: Endpointer,
        producer: str,
        on_turn_done: Callable[[Tab, str], Awaitable[None]],
        on_onset: Callable[[s.VoiceStarted], Awaitable[None]] | None = None,
    ) -> None:
        self.ws = ws
        self.bus = bus
        self.endpoint = endpoint
        self.conversation_id = conversation_id
        self.session = session
        self.capture = Capture(
            bus, endpointer, endpoint, conversation_id, producer, "web", on_onset
        )
        self.outputs: dict[int, BrowserOutput] = {}
        self._replies = 0
        self._out: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._on_turn_done = on_turn_done
        self._tasks: list[asyncio.Task] = []
        self.closed = False

    # -- downstream -----------------------------------------------------------------------

    def send_json(self, message: dict) -> None:
        if not self.closed:
            self._out.put_nowait(json.dumps(message))

    def send_audio(self, reply: int, pcm: bytes) -> None:
        if not self.closed:
            self._out.put_nowait(audio_frame(reply, pcm))

    def open_output(self, rate: int, utterance_id: str) -> BrowserOutput:
        self._replies += 1
        out = BrowserOutput(self, self._replies, rate, utterance_id)
        if self.closed:
            out.gone()
        self.outputs[self._replies] = out
        return out

    async def _sender(self) -> None:
        while True:
            item = await self._out.get()
            if item is None or self.ws.closed:
                return
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_str(item)

    async def _forward(self, start_seq: int) -> None:
        filters = [s.subject_filter(self.endpoint, self.conversation_id, t.type) for t in FORWARDED]
        async with self.bus.follow(filters, start_seq) as follower:
            while not self.closed:
                got = await follower.next(timeout=0.5)
                if got is None or got.event is None:
                    continue
                self.send_json({"type": "event", "event": page_event(got.event)})
                if isinstance(got.event, s.PlaybackDone | s.ControlError):
                    task = asyncio.create_task(self._on_turn_done(self, got.event.utterance_id))
                    self._tasks.append(task)

    # -- upstream -------------------------------------------------------------------------

    async def run(self) -> None:
        await self.capture.bind("web", session=self.session)
        info = await self.bus.js.stream_info(self.bus.stream)
        self._tasks += [
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._forward(info.state.last_seq + 1)),
        ]
        self.send_json(
            {"type": "hello", "conversation_id": self.conversation_id, "session": self.session}
        )
        try:
            async for msg in self.ws:
                if msg.type == web.WSMsgType.BINARY:
                    await self._frame(msg.data)
                elif msg.type == web.WSMsgType.TEXT:
                    await self._message(msg.data)
                else:
                    break
        finally:
            await self.close()

    async def _frame(self, data: bytes) -> None:
        frames, rest = divmod(len(data) - 8, FRAME_BYTES)
        if rest or not 1 <= frames <= MAX_FRAMES:
            self.send_json(
                {
                    "type": "error",
                    "message": f"audio messages are an 8-byte capture time, then 1 to"
                    f" {MAX_FRAMES} frames of {FRAME_BYTES} bytes (20 ms of 16 kHz int16)",
                }
            )
            return
        (captured_ms,) = struct.unpack_from("<d", data)
        await self.capture.feed(data[8:], captured_at=captured_ms / 1000.0)

    async def _message(self, text: str) -> None:
        try:
            m = json.loads(text)
            kind = m["type"]
        except (ValueError, KeyError, TypeError):
            self.send_json({"type": "error", "message": "messages are JSON with a type"})
            return
        if kind == "played":
            out = self.outputs.get(int(m.get("reply", 0)))
            if out is not None:
                out.report(int(m.get("samples", 0)))
        elif kind == "talk-stopped":
            # The user let go of Talk: an utterance in progress ends here.
            await self.capture.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for out in self.outputs.values():
            out.gone()
        with contextlib.suppress(Exception):
            await self.capture.close()
        self._out.put_nowait(None)
        for t in self._tasks:
            t.cancel()
