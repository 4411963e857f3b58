"""One Wyoming client connection: its events in, each request's answers out.

Reading never waits for a result: every request answers from its own task, so a client can
keep streaming text or audio while audio or transcript chunks already come back, and a
client that goes away is noticed at once (its requests are cancelled on the bus). A request
that cannot be served gets a Wyoming `error` event; the connection and the server go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from wyoming.asr import Transcribe
from wyoming.asr import Transcript as WyTranscript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event as WyEvent
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from workers.wyoming.asr import Transcription
from workers.wyoming.bridge import Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.errors import RequestError
from workers.wyoming.handle import Handling
from workers.wyoming.info import build_info
from workers.wyoming.tts import Synthesis

log = logging.getLogger("voicebus.wyoming")

Request = Transcription | Synthesis | Handling


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        bridge: Bridge,
        settings: WyomingSettings,
    ) -> None:
        super().__init__(reader, writer)
        self.bridge = bridge
        self.settings = settings
        self.session = secrets.token_hex(4)
        self._write_lock = asyncio.Lock()
        self.gone = False
        self.transcribe: Transcribe | None = None
        self.transcription: Transcription | None = None
        self.synthesis: Synthesis | None = None
        self.requests: set[Request] = set()
        # After a refused audio or text stream, the rest of it is dropped without more errors.
        self._drop_audio = False
        self._drop_text = False
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: WyEvent) -> None:
        """Write one event; a client that went away ends its requests."""
        if self.gone:
            raise ConnectionResetError("client gone")
        async with self._write_lock:
            try:
                await self.write_event(event)
            except (ConnectionError, RuntimeError, OSError):
                self.gone = True
                raise

    async def handle_event(self, event: WyEvent) -> bool:
        try:
            await self._dispatch(event)
        except RequestError as exc:
            log.info("request refused", extra={"code": exc.code, "reason": exc.message})
            await self._refuse(exc, event)
        except (ConnectionError, OSError):
            self.gone = True
        except Exception as exc:  # a malformed event (missing field, text the log refuses)
            log.info("bad event", extra={"type": event.type, "error": repr(exc)})
            reason = f"bad {event.type} event: {exc.__class__.__name__}: {exc}"
            await self._refuse(RequestError("bad-event", reason[:500]), event)
        return not self.gone

    async def _dispatch(self, event: WyEvent) -> None:
        t = event.type
        if Describe.is_type(t):
            await self.send(build_info(self.settings).event())
        elif Ping.is_type(t):
            await self.send(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(t):
            self.transcribe = Transcribe.from_event(event)
        elif AudioStart.is_type(t):
            await self._audio_start(AudioStart.from_event(event))
        elif AudioChunk.is_type(t):
            if self.transcription is None:
                if self._drop_audio:
                    return
                raise RequestError("no-audio-start", "audio-chunk without audio-start")
            await self.transcription.audio(AudioChunk.from_event(event))
        elif AudioStop.is_type(t):
            if self.transcription is None:
                if self._drop_audio:
                    self._drop_audio = False
                    return
                raise RequestError("no-audio-start", "audio-stop without audio-start")
            request, self.transcription = self.transcription, None
            await request.stop()
        elif SynthesizeStart.is_type(t):
            start = SynthesizeStart.from_event(event)
            await self._begin(self._synthesis(start.voice, streaming=True))
        elif SynthesizeChunk.is_type(t):
            if self.synthesis is None:
                if self._drop_text:
                    return
                raise RequestError("no-synthesize-start", "synthesize-chunk without start")
            await self.synthesis.add(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(t):
            if self.synthesis is None:
                if self._drop_text:
                    self._drop_text = False
                    return
                raise RequestError("no-synthesize-start", "synthesize-stop without start")
            await self.synthesis.finish()
            self.synthesis = None
        elif Synthesize.is_type(t):
            if self.synthesis is not None or self._drop_text:
                return  # sent beside a stream for older servers: the stream is the request
            synthesize = Synthesize.from_event(event)
            request = self._synthesis(synthesize.voice, streaming=False)
            request.check_length(synthesize.text)  # before anything is published
            await self._begin(request)
            try:
                await request.add(synthesize.text)
                await request.finish()
            except RequestError as exc:
                await self._refuse(exc, None, request)
        elif WyTranscript.is_type(t):
            await self._begin(
                Handling(
                    self.bridge,
                    self.settings,
                    self.send,
                    self.session,
                    WyTranscript.from_event(event),
                )
            )
        # Anything else is ignored, as Wyoming servers do with events they do not serve.

    def _synthesis(self, voice: Any, streaming: bool) -> Synthesis:
        if self.synthesis is not None:
            raise RequestError("busy", "a synthesize stream is already open on this connection")
        if streaming:
            self._drop_text = False
        request = Synthesis(self.bridge, self.settings, self.send, self.session, voice, streaming)
        if streaming:
            self.synthesis = request
        return request

    async def _audio_start(self, start: AudioStart) -> None:
        if self.transcription is not None:
            raise RequestError("busy", "audio-start while audio is already streaming")
        self._drop_audio = False
        language = self.transcribe.language if self.transcribe else None
        request = Transcription(
            self.bridge, self.settings, self.send, self.session, start, language
        )
        self.transcription = request
        self.transcribe = None
        await self._begin(request)

    async def _begin(self, request: Request) -> None:
        self.requests.add(request)
        try:
            await request.begin()
        except BaseException:
            await self._cancel(request)  # nothing half-started is left waiting
            raise
        assert request.result is not None
        task = asyncio.create_task(self._answer(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, request: Request) -> None:
        """Wait for the request's result task; turn its failure into an `error` event."""
        assert request.result is not None
        try:
            await request.result
        except RequestError as exc:
            await self._refuse(exc, None, request)
        except (ConnectionError, OSError):
            await self._cancel(request)  # the client went away mid-answer
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug must not take the server down
            log.exception("request failed")
            await self._refuse(RequestError("internal", f"{exc.__class__.__name__}"), None, request)
        finally:
            self.requests.discard(request)

    async def _refuse(self, exc: RequestError, event: WyEvent | None, request: Any = None) -> None:
        """Answer with an error and end the request it belongs to."""
        if request is None:
            request = self._request_of(event)
        if request is not None:
            await self._cancel(request)
        elif event is not None and AudioStart.is_type(event.type):
            self._drop_audio = True  # the audio that follows belongs to the refused request
        elif event is not None and SynthesizeStart.is_type(event.type):
            self._drop_text = True
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self.send(exc.event())

    def _request_of(self, event: WyEvent | None) -> Request | None:
        if event is None:
            return None
        t = event.type
        if AudioChunk.is_type(t) or AudioStop.is_type(t):
            return self.transcription
        if SynthesizeChunk.is_type(t) or SynthesizeStop.is_type(t):
            return self.synthesis
        return None

    async def _cancel(self, request: Request) -> None:
        self.requests.discard(request)
        if request is self.transcription:
            self.transcription, self._drop_audio = None, True
        if request is self.synthesis:
            self.synthesis, self._drop_text = None, True
        try:
            await request.cancel()
        except Exception as exc:  # the bus is down: the stt/tts timeouts end the turn
            log.warning("cancel failed", extra={"error": repr(exc)})

    async def disconnect(self) -> None:
        """The client closed the connection: what it was waiting for is not needed any more."""
        self.gone = True
        for request in list(self.requests):
            # Still listed means its answer task has not handled the result yet, and that task
            # is cancelled below: a result that failed (its write hit the same broken socket
            # in the same turn of the loop) must be cancelled here, or the tts speaks on.
            if answered(request):
                continue
            await self._cancel(request)
        for task in list(self.tasks):
            task.cancel()


def answered(request: Request) -> bool:
    """The request's result finished with its answer sent (no failure, not cancelled)."""
    r = request.result
    return r is not None and r.done() and not r.cancelled() and r.exception() is None
