"""What every worker process shares: start-up, signals, graceful shutdown.

A worker is a subclass of `Worker` with `setup()` (load models, show progress) and
`consumers()`; `run_worker` does the rest: logging, telemetry, bus connection, a check that
the streams exist (`just nats-setup` owns their settings), running the consumers, and on
SIGTERM/SIGINT a drain (the batch in hand is finished and acked), a flush of pending
publishes and of spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.routing import Route
from workers.runtime.audio import AudioFileError
from workers.runtime.bindings import Bindings
from workers.runtime.bus import Bus, BusError, Consumer, Handler
from workers.runtime.config import Settings, get_settings
from workers.runtime.logs import setup_logging
from workers.runtime.models import ModelNotFoundError
from workers.runtime.security import UnknownRoleError, role_of
from workers.runtime.streams import require_streams
from workers.runtime.telemetry import setup_telemetry, shutdown_telemetry

log = logging.getLogger("voicebus.service")

#: Consumers of a tool run or of one instance are deleted by the server after this long
#: without a pull (the services' shared durables are kept).
INACTIVE_THRESHOLD_S = 3600.0


_OWN_PROCESS = False
"""Set by `run_worker`: the worker is this process (`python -m workers.<name>`)."""


def lower_cpu_priority(nice: int) -> None:
    """Make this process yield the CPU to the other workers (add `nice` to its niceness).

    Only a worker that is its own process does: one run inside another program (a test
    run, a tool) would renice its host, and everything the host does or starts after it
    (a whole test suite ran at nice 10 beside a CPU hog after one in-process llm).

    With autogroup scheduling (the Linux default on desktops), niceness only ranks processes
    of one session: a worker started in its own session (`just up`, the demo) kept an equal
    share against the others whatever its niceness, so its autogroup is niced as well. Only
    when this process leads its session: otherwise the group is the user's terminal.
    """
    if not _OWN_PROCESS:
        return
    os.nice(nice)
    if not _autogroup_is_ours():
        return  # no autogroup of its own (kernel option off, not Linux): niceness is enough
    for _ in range(3):
        try:
            _set_autogroup_nice(min(19, nice))
            return
        except BlockingIOError:  # the kernel's 100 ms limit between changes (not root)
            time.sleep(TurnPriority.RETRY_S)
        except OSError:
            return


def _autogroup_is_ours() -> bool:
    """Autogroup scheduling is on and this process leads its session (its group is its own)."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False
    return enabled and os.getsid(0) == os.getpid() and Path("/proc/self/autogroup").exists()


def _set_autogroup_nice(nice: int) -> None:
    """This process's autogroup at `nice`. An unprivileged process may set any of 0..19, at
    most once per 100 ms (BlockingIOError: EAGAIN). Unbuffered: a buffered file's write
    fails only at close, where the error was lost."""
    fd = os.open("/proc/self/autogroup", os.O_WRONLY)
    try:
        os.write(fd, str(nice).encode())
    finally:
        os.close(fd)


class TurnPriority:
    """A worker's CPU priority that follows what the user is waiting for.

    The llm: while a reply's first sentence is awaited, nothing else of the turn needs the
    CPU (the stt is done, the tts waits for that sentence), so it runs at full priority; once
    the sentence is out, the tts speaks it and the rest of the reply (generated far faster
    than it is spoken) yields to it at `nice`. Niced from the start, the first sentence lost
    its core to whatever ran at normal priority beside it: with a browser tab listening on
    2 cores, the llm's first sentence took +76 ms (paired median) against +38 ms unniced.

    The lever is the autogroup's niceness, which an unprivileged process may set anywhere in
    0..19 (a thread's own niceness can only be raised). So the priority moves only where the
    group is this process's own: autogroup scheduling on and the worker leading its session
    (`just up`, `just web`, the demo start each worker so). Elsewhere it is lowered once and
    for all, as `lower_cpu_priority` does. The kernel lets an unprivileged process change
    it at most once per 100 ms (EAGAIN); a change refused so is applied on a retry.
    """

    RETRY_S = 0.11

    def __init__(self, nice: int, *, always: bool = False) -> None:
        self.nice = min(19, max(0, nice))
        self.dynamic = False
        self._always = always
        self._urgent = 0
        self._applied: int | None = None
        self._retry: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Lower the priority (the idle state); from a worker's setup, in its event loop."""
        if not self.nice or not _OWN_PROCESS:
            return
        if self._always or not _autogroup_is_ours():
            lower_cpu_priority(self.nice)
            return
        self.dynamic = True
        self._apply()

    @contextlib.contextmanager
    def urgent(self) -> Any:
        """Full priority for as long as the block runs (a reply up to its first sentence)."""
        self._urgent += 1
        self._apply()
        try:
            yield
        finally:
            self._urgent -= 1
            self._apply()

    @property
    def wanted(self) -> int:
        return 0 if self._urgent else self.nice

    def _apply(self) -> None:
        if not self.dynamic or self._applied == self.wanted:
            return
        want = self.wanted
        try:
            _set_autogroup_nice(want)
        except BlockingIOError:
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(self.RETRY_S, self._retried)
            return
        except OSError as exc:
            log.warning("cannot change the autogroup's niceness (%s): niced for good", exc)
            self.dynamic = False
            lower_cpu_priority(self.nice)
            return
        self._applied = want

    def _retried(self) -> None:
        self._retry = None
        self._apply()


class StartupError(RuntimeError):
    """A worker cannot start (missing device, bad configuration); the message says why."""


#: Errors that end a worker with one line on stderr and exit code 2, not a traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    BusError,
    StartupError,
    ModelNotFoundError,
    AudioFileError,
)


class Worker:
    """Base of a worker: one small room per stage."""

    #: Service name (also the OpenTelemetry service.name and the durable consumer prefix).
    name: str = "worker"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.worker_id = settings.worker_id or self.name
        self.endpoints = settings.served_endpoints
        """The endpoints whose conversations this worker serves."""
        self.bindings = Bindings(bus)
        self._consumers: list[Consumer] = []
        self.stopping = asyncio.Event()
        self._closed = False

    def route_consumer(
        self,
        route: Route,
        handler: Handler | None = None,
        *,
        per_instance: bool = False,
        **options: Any,
    ) -> Consumer:
        """The durable consumer of `route` for this worker: on its served endpoints (or its
        own endpoint, for a per-endpoint route), named for its pool (and instance)."""
        pool = self.settings.pool
        endpoint = self.settings.endpoint
        durable = route.durable(pool, endpoint, self.worker_id if per_instance else "")
        endpoints = [endpoint] if route.per_endpoint else self.endpoints
        if pool or per_instance:
            # A tool run's or an instance's consumer must not outlive it for long.
            options.setdefault("inactive_threshold", INACTIVE_THRESHOLD_S)
        return self.bus.consumer(durable, route.filters(endpoints), handler=handler, **options)

    async def setup(self) -> None:
        """Load models etc. before consuming; raise a clear error if something is missing."""

    def consumers(self) -> list[Consumer]:
        return []

    async def background(self) -> None:
        """Optional extra long-running task (e.g. a microphone loop)."""
        await self.stopping.wait()

    async def aclose(self) -> None:
        """Release resources after the consumers stopped."""

    async def run(self) -> None:
        """Run the consumers until stopped; whatever ends it (a stop, a failed consumer or a
        failed start), the consumers are drained and `aclose` runs."""
        tasks: list[asyncio.Task[None]] = []
        try:
            self._consumers = self.consumers()
            for c in self._consumers:
                await c.start()
            log.info("ready", extra={"worker": self.worker_id})
            tasks = [asyncio.create_task(c.run()) for c in self._consumers]
            tasks.append(asyncio.create_task(self.background()))
            stop_task = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([*tasks, stop_task], return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            failed = next(
                (
                    t.exception()
                    for t in done
                    if t is not stop_task and not t.cancelled() and t.exception() is not None
                ),
                None,
            )
            self.stop()
            # Consumers finish the batch in hand (and ack it) before returning.
            await asyncio.wait(tasks, timeout=10)
            if failed is not None:
                raise failed
        finally:
            self.stop()
            for t in tasks:
                t.cancel()
            await self.close()

    async def close(self) -> None:
        """`aclose` once, however the worker ended (also after a failed `setup`)."""
        if self._closed:
            return
        self._closed = True
        await self.aclose()

    def stop(self) -> None:
        self.stopping.set()
        for c in self._consumers:
            c.stop()


async def serve(factory: Callable[[Bus, Settings], Worker], settings: Settings) -> int:
    bus = await Bus.connect(settings, name=settings.worker_id or factory.__name__)
    await require_streams(bus)
    worker = factory(bus, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.setup()
        await worker.run()
    finally:
        await worker.close()  # a failed setup too: models, files and devices are released
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await bus.close()
    return 0


def run_worker(factory: Callable[[Bus, Settings], Worker], name: str) -> int:
    """Entry point of `python -m workers.<name>`: returns the process exit code."""
    # A crash inside a native library (llama.cpp, CTranslate2, onnxruntime) then leaves the
    # Python stack of every thread in the worker's log instead of a bare exit code.
    faulthandler.enable()
    global _OWN_PROCESS
    _OWN_PROCESS = True
    settings = get_settings()
    if not settings.worker_id:
        settings = settings.for_worker(name)
    try:
        # Never the operator's rights for a name that is no role ("gpu-box", "bench").
        settings.nats_role or role_of(settings.worker_id)
    except UnknownRoleError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    setup_telemetry(name)
    try:
        return asyncio.run(serve(factory, settings))
    except STARTUP_ERRORS as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        shutdown_telemetry()
