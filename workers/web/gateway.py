"""The web gateway worker: serves the page and is the "web" endpoint's mic and speaker.

Security: it listens on loopback by default; every request but the static JavaScript and
/healthz must carry the start's secret token (`?token=`); the Host header must name this
server (a DNS-rebinding page cannot reach it under another name); the WebSocket also checks
that its Origin is this server's own page. Its NATS user (role "web") may publish only
`voice.web.*` subjects.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

import schemas as s
from schemas.routing import SPEAKER
from workers.runtime.bus import Bus, Consumer
from workers.runtime.config import Settings
from workers.runtime.endpoint.endpointer import (
    RESUME_MS,
    SMART_SCORE_AHEAD_MS,
    SMART_TRANSCRIPT_WAIT_MS,
    EndpointConfig,
    Endpointer,
)
from workers.runtime.endpoint.playback import PlaybackConfig, Player
from workers.runtime.endpoint.turn import make_turn_model
from workers.runtime.endpoint.vad import make_vad
from workers.runtime.eventlog import EventLog
from workers.runtime.service import StartupError, Worker
from workers.web import views
from workers.web.config import WebSettings
from workers.web.sink import BrowserSink
from workers.web.tab import Tab

log = logging.getLogger("voicebus.web")

STATIC = Path(__file__).parent / "static"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: How long the page waits for the recorder to have written a finished turn.
TURN_RECORDED_WAIT_S = 10.0


class WebWorker(Worker):
    name = "web"

    def __init__(self, bus: Bus, settings: Settings, web_settings: WebSettings | None = None):
        super().__init__(bus, settings)
        self.web = web_settings or WebSettings()
        if settings.endpoint != "web":
            raise StartupError(
                f"the web gateway is the endpoint 'web' (ENDPOINT={settings.endpoint!r})"
            )
        if not self.web.token:
            raise StartupError("WEB_TOKEN is empty: `just web` makes one; set it to run alone")
        self.sink = BrowserSink()
        self.player = Player(
            bus, self.sink, self.worker_id, PlaybackConfig(ack_wait_s=self.web.ack_wait_s)
        )
        self.player.stopping = self.stopping
        self.tabs: dict[str, Tab] = {}
        self.log: EventLog | None = None
        self.runner: web.AppRunner | None = None
        self.port = self.web.port
        if self.web.turn not in ("smart", "vad"):
            raise StartupError(f"WEB_TURN={self.web.turn!r}: want smart or vad")
        # The mic's end-pointing, shared: a tab's turn ends the way a spoken one at the
        # device does (one end-of-turn model for all tabs: it keeps no state between calls).
        self.endpointing = EndpointConfig(
            turn=self.web.turn,  # type: ignore[arg-type]
            transcript_wait_ms=SMART_TRANSCRIPT_WAIT_MS if self.web.turn == "smart" else 0,
            score_ahead_ms=SMART_SCORE_AHEAD_MS,
            resume_ms=RESUME_MS,
        )
        self.turn_model = make_turn_model(self.web.turn)

    # -- worker ---------------------------------------------------------------------------

    async def setup(self) -> None:
        make_vad("silero", 3)  # a missing VAD model fails here, in one line
        self.log = await asyncio.to_thread(EventLog, self.settings.db_url, False)
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.web.host, self.web.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {self.web.host}:{self.web.port}: {exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("page ready", extra={"host": self.web.host, "port": self.port})

    def consumers(self) -> list[Consumer]:
        return [
            self.route_consumer(
                SPEAKER,
                self.player.on_tts_started,
                batch=1,
                ack_wait=self.web.ack_wait_s,
                max_ack_pending=10_000,
            )
            for _ in range(max(1, self.web.max_concurrent))
        ]

    async def aclose(self) -> None:
        for tab in list(self.tabs.values()):
            await tab.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.log is not None:
            self.log.close()

    # -- http -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/api/conversations", self.api_conversations)
        app.router.add_get("/api/conversations/{id}/turns", self.api_turns)
        app.router.add_get("/api/conversations/{id}/heard.wav", self.api_heard)
        app.router.add_get("/api/conversations/{id}/trace.json", self.api_trace)
        app.router.add_static("/static/", STATIC)
        return app

    def _hosts(self) -> set[str]:
        return {f"{h}:{self.port}" for h in {self.web.host, "127.0.0.1", "localhost", "[::1]"}}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in self._hosts():
            return web.Response(status=421, text="wrong host")
        if request.path == "/healthz" or request.path.startswith("/static/"):
            response = await handler(request)
        else:
            token = request.query.get("token", "")
            if not hmac.compare_digest(token.encode(), self.web.token.encode()):
                return web.Response(status=403, text="forbidden: open the URL `just web` printed")
            response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")  # the token stays here
        return response

    async def index(self, request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "index.html")  # type: ignore[return-value]

    def _conversation(self, request: web.Request) -> str:
        cid = request.match_info["id"]
        if not _ID.match(cid):
            raise web.HTTPBadRequest(text="bad conversation id")
        return cid

    async def api_conversations(self, request: web.Request) -> web.Response:
        assert self.log is not None
        rows = await asyncio.to_thread(views.conversations, self.log)
        return web.json_response({"conversations": rows})

    async def api_turns(self, request: web.Request) -> web.Response:
        assert self.log is not None
        cid = self._conversation(request)
        return web.json_response({"turns": await asyncio.to_thread(views.turns, self.log, cid)})

    async def api_heard(self, request: web.Request) -> web.Response:
        assert self.log is not None
        cid = self._conversation(request)
        try:
            wav = await asyncio.to_thread(views.heard_wav, self.log, cid)
        except views.ReplayError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.Response(body=wav, content_type="audio/wav")

    async def api_trace(self, request: web.Request) -> web.Response:
        assert self.log is not None
        cid = self._conversation(request)
        data = await asyncio.to_thread(views.trace_json, self.log, cid)
        return web.json_response(
            data, headers={"Content-Disposition": f'attachment; filename="trace-{cid}.json"'}
        )

    # -- the tab --------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if origin != f"http://{request.host}":
            return web.Response(status=403, text="forbidden origin")
        if len(self.tabs) >= self.web.max_tabs:
            return web.Response(status=503, text=f"{self.web.max_tabs} tabs already talk")
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=20, compress=False)
        await ws.prepare(request)
        conversation_id = s.new_id()
        tab = Tab(
            ws,
            self.bus,
            self.settings.endpoint,
            conversation_id,
            conversation_id[:8],
            Endpointer(make_vad("silero", 3), self.endpointing, self.turn_model),
            self.worker_id,
            self._turn_done,
            self.player.heard_onset,
        )
        self.tabs[conversation_id] = tab
        self.sink.tabs[conversation_id] = tab
        log.info("tab open", extra={"conversation": conversation_id})
        try:
            await tab.run()
        finally:
            self.tabs.pop(conversation_id, None)
            self.sink.tabs.pop(conversation_id, None)
            log.info("tab closed", extra={"conversation": conversation_id})
        return ws

    async def _turn_done(self, tab: Tab, utterance_id: str) -> None:
        """Send the turn's waterfall once the recorder has written its end."""
        assert self.log is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TURN_RECORDED_WAIT_S
        while loop.time() < deadline and not tab.closed:
            row = await asyncio.to_thread(self.log.turn, utterance_id)
            if row is not None and (row.playback_done_at is not None or row.error_code):
                tab.send_json({"type": "turn", "turn": views.waterfall(row)})
                return
            await asyncio.sleep(0.2)
