"""A local HTTP server that speaks Ollama's API, backed by the embedded llama.cpp model.

No Ollama server can be installed here, so the Ollama backend is tested against this one:
`POST /api/chat` (NDJSON stream or one JSON object), `GET /api/tags`, `GET /api/version`,
`GET /`; an unknown model gets Ollama's 404 `{"error": "model 'x' not found, try pulling
it first"}`. The tokens are real (SmolLM2-135M); closing the connection stops generation.

    python -m ops.ollama_compat [--port 11434] [--name smollm2:135m] [--model PATH.gguf]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workers.llm.backends import EmbeddedBackend, Generation
from workers.runtime.models import ModelNotFoundError

DEFAULT_NAME = "smollm2:135m"
VERSION = "0.12.0"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OllamaCompatServer:
    def __init__(
        self,
        backend: EmbeddedBackend,
        name: str = DEFAULT_NAME,
        host: str = "127.0.0.1",
        port: int = 11434,
    ) -> None:
        self.backend = backend
        self.name = name
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._digest = ""
        self.requests = 0
        self.cancelled = 0
        """Generations stopped because the client went away."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> OllamaCompatServer:
        await self.backend.start()
        self._digest = await asyncio.to_thread(_sha256, self.backend.path)
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.backend.aclose()

    def serves(self, model: str) -> bool:
        return model in (self.name, f"{self.name}:latest") or (
            ":" not in self.name and model == f"{self.name}:latest"
        )

    # -- HTTP -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await _read_request(reader)
            self.requests += 1
            await self._route(method, path, body, reader, writer)
        except HttpError as exc:
            await _send_json(writer, exc.status, {"error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _route(
        self,
        method: str,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        path = path.split("?", 1)[0]
        if path == "/" and method in ("GET", "HEAD"):
            await _send(writer, 200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version" and method == "GET":
            await _send_json(writer, 200, {"version": VERSION})
        elif path == "/api/tags" and method == "GET":
            await _send_json(writer, 200, {"models": [self._model_entry()]})
        elif path == "/api/chat" and method == "POST":
            await self._chat(_json_body(body), reader, writer)
        elif path in ("/api/version", "/api/tags", "/api/chat"):
            raise HttpError(405, f"method {method} not allowed")
        else:
            await _send(writer, 404, b"404 page not found", "text/plain")

    def _model_entry(self) -> dict[str, Any]:
        path = self.backend.path
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(),
            "size": path.stat().st_size,
            "digest": self._digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "135M",
                "quantization_level": path.stem.rsplit(".", 1)[-1],
            },
        }

    async def _chat(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        model = request.get("model")
        if not model:
            raise HttpError(400, "model is required")
        if not self.serves(model):
            raise HttpError(404, f"model '{model}' not found, try pulling it first")
        messages = [
            {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
            for m in request.get("messages") or []
            if isinstance(m, dict)
        ]
        options = request.get("options") or {}
        num_predict = int(options.get("num_predict", self.backend.max_tokens))
        max_tokens = num_predict if num_predict > 0 else self.backend.context_tokens
        stream = request.get("stream", True)
        cancel = threading.Event()
        gen = Generation()
        started = time.perf_counter_ns()
        first = 0
        pieces: list[str] = []

        # A client that goes away stops the generation (as Ollama does).
        async def watch() -> None:
            with contextlib.suppress(Exception):
                await reader.read()
            cancel.set()

        watcher = asyncio.create_task(watch())
        try:
            if stream:
                await _start_chunked(writer)
            async for piece in self.backend.stream(
                messages,
                seed=int(options.get("seed", random.randrange(2**31))),
                cancel=cancel,
                gen=gen,
                max_tokens=max_tokens,
                temperature=float(options.get("temperature", self.backend.temperature)),
            ):
                first = first or time.perf_counter_ns()
                pieces.append(piece)
                if stream:
                    await _chunk(writer, self._part(piece, done=False))
            if cancel.is_set():
                self.cancelled += 1
                return
            end = time.perf_counter_ns()
            final = self._part("" if stream else "".join(pieces), done=True)
            final.update(
                done_reason=gen.finish_reason,
                total_duration=end - started,
                load_duration=0,
                prompt_eval_count=gen.prompt_tokens,
                prompt_eval_duration=(first or end) - started,
                eval_count=len(pieces),
                eval_duration=end - (first or end),
            )
            if stream:
                await _chunk(writer, final)
                await _end_chunked(writer)
            else:
                await _send_json(writer, 200, final)
        except ConnectionError:
            cancel.set()
            self.cancelled += 1
        finally:
            watcher.cancel()

    def _part(self, content: str, done: bool) -> dict[str, Any]:
        return {
            "model": self.name,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done": done,
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("client closed")
    try:
        method, path, _version = line.decode("latin-1").split()
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        key, _, value = raw.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return method.upper(), path, body


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    return data


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Date: {_now()}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, status: int, obj: dict[str, Any]) -> None:
    await _send(writer, status, json.dumps(obj).encode(), "application/json; charset=utf-8")


async def _start_chunked(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()


async def _chunk(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode() + b"\n"
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _end_chunked(writer: asyncio.StreamWriter) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _serve(args: argparse.Namespace) -> int:
    try:
        backend = EmbeddedBackend(args.model, threads=args.threads)
        server = await OllamaCompatServer(backend, args.name, args.host, args.port).start()
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Ollama-compatible server for {args.name} at {server.url}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name the server answers to")
    parser.add_argument("--model", default="", help="GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=0)
    return asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
