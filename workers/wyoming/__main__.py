"""`just wyoming [--uri tcp://HOST:PORT]`: the pipeline as Wyoming services (asr, tts, handle)
for Home Assistant and Wyoming satellites.

NATS and the recorder, stt, llm and tts workers are started unless they already serve the
`wyoming` endpoint (e.g. under `just up`); the bridge itself loads no model. Ctrl-C or
SIGTERM stops the server first, then the workers it started (the recorder last).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from functools import partial

from wyoming.server import AsyncServer

from workers.runtime.bus import BusError
from workers.runtime.config import get_settings
from workers.runtime.logs import setup_logging
from workers.runtime.natsd import NatsServerError
from workers.runtime.telemetry import setup_telemetry, shutdown_telemetry
from workers.wyoming.bridge import Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.handler import WyomingHandler
from workers.wyoming.services import Services

log = logging.getLogger("voicebus.wyoming")


def say(msg: str) -> None:
    print(f"wyoming: {msg}", file=sys.stderr, flush=True)


async def serve(wy: WyomingSettings) -> int:
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = AsyncServer.from_uri(wy.uri)
    except ValueError as exc:
        say(f"error: WYOMING_URI={wy.uri!r}: {exc}")
        return 2
    async with Services(settings, start=wy.start_workers, progress=say):
        bridge = await Bridge.connect(settings)
        try:
            await server.start(partial(WyomingHandler, bridge=bridge, settings=wy))
        except OSError as exc:
            await bridge.close()
            say(f"error: cannot listen at {wy.uri}: {exc}")
            return 2
        say(f"serving asr, tts and handle at {wy.uri} (endpoint {bridge.endpoint}); Ctrl-C stops")
        try:
            await stop.wait()
        finally:
            await server.stop()
            await bridge.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just wyoming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--uri", help="where to listen (WYOMING_URI, default tcp://127.0.0.1:10700)")
    p.add_argument(
        "--no-workers",
        action="store_true",
        help="do not start NATS or workers (WYOMING_START_WORKERS=0)",
    )
    args = p.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.uri:
        overrides["uri"] = args.uri
    if args.no_workers:
        overrides["start_workers"] = False
    wy = WyomingSettings(**overrides)  # type: ignore[arg-type]
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    setup_telemetry("wyoming")
    try:
        return asyncio.run(serve(wy))
    except (BusError, NatsServerError, RuntimeError, TimeoutError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        shutdown_telemetry()


if __name__ == "__main__":
    sys.exit(main())
