"""`just web`: the page at http://127.0.0.1:8765 (WEB_HOST, WEB_PORT) and what it needs.

NATS and the services (recorder, stt, llm, tts) are started unless they already run (a
service runs when a worker pulls from its durable, e.g. under `just up`); the web gateway
is started in any case, with a new secret token. Once the page answers, its URL, token
included, is printed on a line of its own on stdout. Ctrl-C stops what this command started.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import socket
import sys
import urllib.request

import nats.js.errors

from workers.cli.pipeline import Pipeline, progress
from workers.cli.up import ConfigError, supervise
from workers.runtime.bus import Bus, BusError
from workers.runtime.config import Settings, get_settings
from workers.runtime.natsd import NatsServerError, ensure_nats
from workers.runtime.procs import WorkerProcess, ready_durable
from workers.runtime.streams import ensure_streams
from workers.web.config import WebSettings

SERVICES = ("recorder", "stt", "llm", "tts")


async def running_services(settings: Settings) -> set[str]:
    """The services a worker already pulls for (watched for a second and a half)."""
    bus = await Bus.connect(settings, "cli")
    found: set[str] = set()
    try:
        await ensure_streams(bus)
        for _ in range(6):
            for name in SERVICES:
                try:
                    info = await bus.js.consumer_info(bus.stream, ready_durable(name, settings))
                except nats.js.errors.NotFoundError:
                    continue
                if info.num_waiting:
                    found.add(name)
            if len(found) == len(SERVICES):
                break
            await asyncio.sleep(0.25)
    finally:
        await bus.close()
    return found


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_page(url: str, proc: WorkerProcess, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not proc.running:
            raise ConfigError(
                f"the web gateway exited ({proc.proc and proc.proc.returncode}); "
                f"see {proc.log_file}"
            )
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=1).read())
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the page did not answer at {url} in {timeout:.0f} s")


async def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    web = WebSettings()
    host = args.host or web.host
    port = args.port if args.port is not None else web.port
    if port == 0:
        port = free_port(host)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    token = secrets.token_urlsafe(18)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nats = await asyncio.to_thread(ensure_nats, settings)
    try:
        if nats:
            progress(f"started embedded NATS at {nats.url}")
        have = await running_services(settings)
        if have:
            progress(f"already running: {', '.join(sorted(have))}")
        missing = [n for n in SERVICES if n not in have]
        async with Pipeline(settings, services=missing) as p:
            env = {"ENDPOINT": "web", "WEB_TOKEN": token, "WEB_HOST": host, "WEB_PORT": str(port)}
            gateway = WorkerProcess(
                "web", settings, worker_id="web", env=env, log_file=p.logs / "web.log"
            )
            p.procs = {"web": gateway.start(), **p.procs}
            await wait_page(f"http://{shown_host}:{port}/healthz", gateway)
            progress(f"page ready (logs in {p.logs}); open this URL (Ctrl-C stops):")
            print(f"http://{shown_host}:{port}/?token={token}", flush=True)
            await supervise(p, stop)
    finally:
        if nats is not None:
            await asyncio.to_thread(nats.stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just web", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", help="address to serve on (WEB_HOST, default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (WEB_PORT, default 8765; 0 = any free one)")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (ConfigError, BusError, NatsServerError, RuntimeError, TimeoutError) as exc:
        print(f"web: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
