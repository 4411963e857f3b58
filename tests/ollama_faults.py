"""An HTTP server speaking Ollama's `/api/chat` NDJSON stream with faults on cue.

Each chat request takes the next `Fault` from the script: it streams `tokens` parts, then
stalls, cuts the connection, sends a line that is not JSON, or ends normally. Real HTTP and
chunked NDJSON through the real `ollama` client: what a stalled or broken Ollama does to the
worker, which the model-backed `ops.ollama_compat` cannot be made to do on cue."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Literal

Ending = Literal["done", "stall", "disconnect", "garbage", "silent"]


@dataclass(frozen=True)
class Fault:
    tokens: int = 3
    """Parts streamed before the ending."""
    ending: Ending = "done"
    """done: a final part; stall: nothing more, connection held open; disconnect: the
    connection is cut mid-body; garbage: a line that is not JSON; silent: not even the
    response headers (a server stuck before answering)."""


class FaultyOllama:
    def __init__(self, script: list[Fault], name: str = "faulty:1b") -> None:
        self.script = list(script)
        self.delay_s = 0.0
        """Pause before each part (a slow model), seconds."""
        self.name = name
        self.requests = 0
        self.closed_by_client = 0
        """Stalled responses whose connection the client closed (an interrupt, a timeout)."""
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultyOllama:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if path.startswith("/api/tags"):
                await self._json(writer, {"models": [{"name": self.name, "model": self.name}]})
            elif path.startswith("/api/chat") and method == "POST":
                json.loads(body)
                await self._chat(reader, writer)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _json(self, writer: asyncio.StreamWriter, doc: object) -> None:
        data = json.dumps(doc).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _chat(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        fault = self.script.pop(0) if self.script else Fault()
        if fault.ending == "silent":
            await self._held(reader)
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(fault.tokens):
            await asyncio.sleep(self.delay_s)
            # Each request's words differ (r<request>w<i>), as a sampled reply would.
            word = f" r{self.requests}w{i}" + ("." if i % 4 == 3 else "")
            await self._chunk(writer, self._part(word))
        if fault.ending == "done":
            final = self._part("", done=True)
            final.update(done_reason="stop", prompt_eval_count=7, eval_count=fault.tokens)
            await self._chunk(writer, final)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif fault.ending == "garbage":
            await self._chunk(writer, None, raw=b"<html>502 Bad Gateway</html>\n")
            await self._held(reader)
        elif fault.ending == "disconnect":
            writer.transport.abort()
        else:
            await self._held(reader)

    async def _held(self, reader: asyncio.StreamReader) -> None:
        """Hold the connection open, sending nothing, until the client closes it."""
        with contextlib.suppress(Exception):
            await reader.read()
        self.closed_by_client += 1

    def _part(self, content: str, done: bool = False) -> dict[str, object]:
        return {
            "model": self.name,
            "created_at": "2026-12-02T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": done,
        }

    async def _chunk(
        self, writer: asyncio.StreamWriter, part: dict[str, object] | None, raw: bytes = b""
    ) -> None:
        data = raw or json.dumps(part).encode() + b"\n"
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
