"""One Wyoming connection in process (real NATS, the real handler and requests): what happens
when the client goes away in the same turn of the event loop as a request's answer fails."""

from __future__ import annotations

import asyncio
import socket

from wyoming.tts import SynthesizeChunk, SynthesizeStart

import schemas as s
from tests.conftest import wait_for
from tests.support import Tap
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.wyoming.bridge import Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.handler import WyomingHandler


async def test_a_reply_whose_audio_failed_as_the_client_left_is_still_stopped_on_the_bus(
    bus: Bus, settings: Settings
) -> None:
    """The client's socket breaks: the synthesis's next audio write fails, and the connection's
    reader ends and calls disconnect() before the request's answer task has seen that failure
    (seen under load: the stress run's test_wyoming waited 20 s for a tts.done). The reply must
    still be interrupted, or the tts speaks the whole text to no one."""
    bridge = await Bridge.connect(settings)
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    handler = WyomingHandler(reader, writer, bridge, WyomingSettings(_env_file=None))  # type: ignore[call-arg]
    tap = await Tap().start(bus)
    try:
        await handler.handle_event(SynthesizeStart().event())
        await handler.handle_event(SynthesizeChunk(text="Good morning. Here is the news.").event())
        request = handler.synthesis
        assert request is not None and request.result is not None
        utt = request.utterance_id
        await wait_for(lambda: tap.of(s.ReplySentence, utt))

        # The tts's first audio arrives just as the client has gone.
        theirs.close()
        handler.gone = True
        request.queue.put_nowait(
            s.TtsAudioChunk(
                event_id=s.new_id(),
                endpoint=bridge.endpoint,
                conversation_id=request.conversation_id,
                utterance_id=utt,
                producer="tts",
                seq=0,
                sentence_index=0,
                audio=b"\0\0" * 320,
                rate=22_050,
            )
        )
        # The relay's write fails... Polled, not awaited through a done-callback: a callback
        # would run after the answer task's own wake-up, which is the order that works.
        while not request.result.done():  # noqa: ASYNC110
            await asyncio.sleep(0)
        # ...and the reader, woken by the same broken socket, ends the connection before
        # the answer task runs (the event loop's order when both wake together).
        await handler.disconnect()
        await asyncio.gather(*handler.tasks, return_exceptions=True)

        (done,) = await wait_for(lambda: tap.of(s.ReplyDone, utt), timeout=5)
        assert done.finish_reason == "interrupted"
        await bus.nc.flush()
        # Stopped once: the answer task, if it ran, found the request already cancelled.
        (interrupt,) = tap.of(s.Interrupt, utt)
        assert interrupt.reason == "user"
    finally:
        await tap.stop()
        writer.close()
        await bridge.close()
