"""The event bus: NATS JetStream with typed events, trace headers and dead-lettering.

- `Bus.connect` takes the servers of NATS_URL (one, or a cluster's list), reconnects forever
  to any of them and reports connection trouble once per state change.
- The streams (VOICE for voice.>, VOICE_DLQ) are set up by workers.runtime.streams, never
  by a worker.
- `Bus.publish` sets Nats-Msg-Id (the event id) and the W3C trace context.
- `Consumer` is a durable pull consumer: decode + validate, hand over a typed event, ack
  only after the handler succeeded; an undecodable or invalid message, or one whose handler
  keeps failing, goes to `dlq.<consumer>` with the reason and the worker goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
)
from opentelemetry import context as otel_context

from schemas import (
    Event,
    EventDecodeError,
    decode,
    dlq_subject,
    encode,
    subject_filter,
)
from workers.runtime.config import Settings, get_settings
from workers.runtime.security import OPERATOR, ROLES, UnknownRoleError, inbox_prefix, role_of
from workers.runtime.telemetry import extract_context, inject_headers

log = logging.getLogger("voicebus.bus")

DLQ_STREAM = "VOICE_DLQ"
MSG_ID = "Nats-Msg-Id"
TYPE_HEADER = "Voice-Type"
#: Tries of the first connection before Bus.connect gives up with a BusError.
CONNECT_ATTEMPTS = 3


def _is_auth_error(exc: object) -> bool:
    text = repr(exc).lower()
    return "authorization" in text or "authentication" in text


def bus_role(settings: Settings) -> str:
    """The NATS role a connection with these settings acts as (its user's, or its worker's)."""
    if settings.nats_user is not None:
        # Someone else's user (their own server config): NATS' default inbox.
        return settings.nats_user if settings.nats_user in ROLES else OPERATOR
    try:
        return settings.nats_role or role_of(settings.worker_id)
    except UnknownRoleError:
        return OPERATOR


class BusError(RuntimeError):
    """The bus cannot be used; the message says what to do."""


class Released(Exception):
    """Raised by a handler that gives its message back unfinished (the worker is stopping):
    it is nak'd at once for another instance, and never counts toward dead-lettering."""


@dataclass(frozen=True)
class Followed:
    """One event read by a `Follower`."""

    event: Event | None
    """None if the message does not decode (the recorder dead-letters it)."""
    stream_seq: int
    context: otel_context.Context
    """The trace context it was published in."""


@dataclass(frozen=True)
class Delivery:
    """One received event with what the bus knows about it."""

    event: Event
    subject: str
    headers: dict[str, str]
    num_delivered: int
    stream_seq: int
    context: otel_context.Context
    msg: Msg = field(repr=False)
    _deferred: list[bool] = field(default_factory=lambda: [False], repr=False, compare=False)

    def defer(self) -> None:
        """Do not ack when the handler returns: the handler acks later with `ack()` (and keeps
        the message alive with `in_progress()` meanwhile), e.g. once audio has been heard."""
        self._deferred[0] = True

    @property
    def deferred(self) -> bool:
        return self._deferred[0]

    async def ack(self) -> None:
        await _ack(self.msg)

    async def nak(self, delay: float) -> None:
        """Have it redelivered after `delay` seconds (work deferred by the handler failed)."""
        try:
            await self.msg.nak(delay=delay)
        except nats.errors.Error:
            pass  # the ack wait runs out and it comes back anyway

    async def in_progress(self) -> None:
        try:
            await self.msg.in_progress()
        except nats.errors.Error:
            pass  # reconnecting: if the ack wait runs out, the message comes back

    @contextlib.asynccontextmanager
    async def working(self, every_s: float) -> AsyncIterator[None]:
        """Tell JetStream every `every_s` that this message is still being worked on (a
        claimed utterance or reply), so it is redelivered only if this process dies."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(every_s)
                await self.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()


Handler = Callable[[Event, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[Delivery]], Awaitable[None]]


#: JetStream API errors that mean "not now" (a cluster electing a leader after a node died,
#: or the client reconnecting to another node), not "no".
TRANSIENT_API_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


async def retry_transient(
    call: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "JetStream"
) -> Any:
    """`call()` again while the cluster answers "not now", up to `timeout` seconds; then the
    last error is raised as it came (callers handle NATS errors as before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.1
    while True:
        try:
            return await call()
        except TRANSIENT_API_ERRORS as exc:
            if loop.time() + delay > deadline:
                log.warning("jetstream did not answer", extra={"what": what, "error": repr(exc)})
                raise
            log.info("jetstream busy; retrying", extra={"what": what, "error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


class Bus:
    def __init__(self, nc: NatsClient, settings: Settings, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.name = name
        self.stream = settings.stream_name
        self.role = bus_role(settings)
        self._state: dict[str, bool] = {}
        # Pipelined publishes awaiting their ack: what to send again if the ack never comes.
        self._unacked: dict[asyncio.Future[PubAck], tuple[str, bytes, dict[str, str]]] = {}

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        name: str = "voicebus",
        connect_timeout: float = 2.0,
    ) -> Bus:
        settings = settings or get_settings()
        state: dict[str, Any] = {"down": False, "closing": False, "connected": False}

        async def error_cb(exc: Exception) -> None:
            # Called per failed reconnect attempt; report the first of a streak only.
            state["last_error"] = exc
            if _is_auth_error(exc):
                # Kept apart from the last error: on a loaded machine or a cluster the
                # last attempt may merely time out after a server already said "wrong
                # password", and that refusal is what the user must hear about.
                state["auth_error"] = exc
            if state["connected"] and not state["down"]:
                log.warning("nats error", extra={"error": repr(exc), "worker": name})
            state["down"] = state["connected"]

        async def disconnected_cb() -> None:
            if not state["closing"]:
                log.warning("nats disconnected; reconnecting", extra={"worker": name})
            state["down"] = True

        async def reconnected_cb() -> None:
            log.warning("nats reconnected", extra={"worker": name})
            state["down"] = False

        try:
            nc = await nats.connect(
                # Every server of NATS_URL: the first connection takes any that answers,
                # a reconnect after a node died goes to another (and to those the cluster
                # told us about).
                settings.nats_servers,
                name=name,
                user=settings.nats_user,
                password=settings.nats_password,
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                # The first connection gives up after a few tries (a clear error instead
                # of hanging forever on a wrong URL or password); reconnects never do.
                max_reconnect_attempts=CONNECT_ATTEMPTS,
                reconnect_time_wait=0.25,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                pending_size=64 * 1024 * 1024,
                drain_timeout=5,
                # Each role may subscribe only below its own prefix: no other client's
                # deliveries or API replies.
                inbox_prefix=inbox_prefix(bus_role(settings)),
            )
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            if "auth_error" in state or _is_auth_error(state.get("last_error")):
                raise BusError(
                    f"NATS at {settings.nats_url} refused user {settings.nats_user!r}: wrong "
                    "or missing credentials (NATS_USER/NATS_PASSWORD, NATS_PASSWORD_<ROLE> "
                    "or DATA_DIR/nats/credentials.env)"
                ) from None
            raise BusError(
                f"cannot reach NATS at {settings.nats_url} ({exc.__class__.__name__}): "
                "start it with `just nats` or set NATS_URL"
            ) from None
        except nats.errors.Error as exc:
            raise BusError(f"NATS at {settings.nats_url} refused the connection: {exc}") from None
        nc.options["max_reconnect_attempts"] = -1
        state["connected"] = True
        bus = cls(nc, settings, name)
        bus._state = state
        return bus

    # -- publishing -------------------------------------------------------------------

    @staticmethod
    def headers_for(event: Event, ctx: otel_context.Context | None = None) -> dict[str, str]:
        headers = {MSG_ID: event.event_id, TYPE_HEADER: event.type}
        inject_headers(headers, ctx)
        return headers

    async def publish(
        self,
        event: Event,
        ctx: otel_context.Context | None = None,
        timeout: float = 5.0,
        retry_s: float = 30.0,
    ) -> PubAck:
        """Publish and wait for JetStream's ack (stored). `duplicate=True` means a re-publish.

        While a cluster elects a new stream leader (a node died) the publish is tried again
        for up to `retry_s`, with the same Msg-Id: stored once whatever happened to the
        tries before."""
        subject, data, headers = event.subject(), encode(event), self.headers_for(event, ctx)
        return await retry_transient(
            lambda: self.js.publish(subject, data, timeout=timeout, headers=headers),
            timeout=retry_s,
            what=f"publish {event.type}",
        )

    async def publish_nowait(
        self, event: Event, ctx: otel_context.Context | None = None
    ) -> asyncio.Future[PubAck]:
        """Pipelined publish: returns the ack future (await `flush_publishes` before exit)."""
        subject, data, headers = event.subject(), encode(event), self.headers_for(event, ctx)
        future = await self.js.publish_async(subject, data, headers=headers)
        self._unacked[future] = (subject, data, headers)
        future.add_done_callback(self._acked)
        return future

    def _acked(self, future: asyncio.Future[PubAck]) -> None:
        # A refused publish (no stream leader for a moment) stays for `flush_publishes`.
        if future.cancelled() or future.exception() is None:
            self._unacked.pop(future, None)

    async def flush_publishes(self, timeout: float = 5.0) -> None:
        """Wait for the acks of pipelined publishes.

        The ack of a message in flight when the server died never comes (nats-py would wait
        forever, and the message may not be stored), and a publish made while a cluster had
        no stream leader is refused: such messages are published again with their Msg-Id
        (after `timeout` for a missing ack), so the stream keeps each exactly once. Raises
        if the server still does not ack them.
        """
        if not self._unacked:
            return
        await asyncio.wait(list(self._unacked), timeout=timeout)
        for future in list(self._unacked):
            resend = self._unacked.pop(future, None)
            if future.done() and not future.cancelled() and future.exception() is None:
                continue
            future.cancel()  # frees nats-py's pending slot
            if resend is not None:
                subject, data, headers = resend
                await retry_transient(
                    lambda s=subject, d=data, h=headers: self.js.publish(  # type: ignore[misc]
                        s, d, headers=h, timeout=timeout
                    ),
                    what="publish",
                )

    async def dead_letter(self, consumer: str, msg: Msg, reason: str) -> None:
        headers = dict(msg.headers or {})
        seq = _stream_seq(msg)
        headers.update(
            {
                MSG_ID: f"dlq-{consumer}-{seq}" if seq else f"dlq-{consumer}-{time.time_ns()}",
                "Dlq-Reason": reason[:2000],
                "Dlq-Subject": msg.subject,
                "Dlq-Consumer": consumer,
                "Dlq-Stream-Seq": str(seq),
            }
        )
        await self.js.publish(dlq_subject(self.role, consumer), msg.data, headers=headers)
        log.warning(
            "dead-lettered", extra={"consumer": consumer, "subject": msg.subject, "reason": reason}
        )

    # -- consuming --------------------------------------------------------------------

    def consumer(
        self,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        **options: Any,
    ) -> Consumer:
        return Consumer(self, durable, list(filter_subjects), handler, batch_handler, **options)

    async def last(self, endpoint: str, conversation_id: str, event_type: str) -> Event | None:
        """The last event of a type in a conversation, from the stream (None if there is none,
        it does not decode, or the stream cannot say): how workers learn where a turn stands
        when they did not see it happen (a restart, another instance's work)."""
        found = await self.last_at(endpoint, conversation_id, event_type)
        return found[0] if found else None

    async def last_at(
        self, endpoint: str, conversation_id: str, event_type: str
    ) -> tuple[Event, int] | None:
        """`last`, with the event's stream sequence (to tell which of two came first)."""
        subject = subject_filter(endpoint, conversation_id, event_type)
        try:
            msg = await self.js.get_last_msg(self.stream, subject)
            return decode(msg.data), int(msg.seq or 0)
        except nats.js.errors.NotFoundError:
            return None
        except (EventDecodeError, nats.errors.Error, TimeoutError) as exc:
            log.info("last-event lookup failed", extra={"subject": subject, "error": repr(exc)})
            return None

    def follow(self, filter_subjects: Sequence[str], start_seq: int) -> Follower:
        """The events on `filter_subjects` from stream sequence `start_seq` on (0: from
        now on), in order."""
        return Follower(self, list(filter_subjects), start_seq)

    async def delete_consumers(self, name_part: str) -> list[str]:
        """Delete the durable consumers whose name contains `name_part` (a tool run's pool
        when it ends, so it leaves nothing behind on a shared server)."""
        deleted = []
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
            for info in await self.js.consumers_info(self.stream):
                name = info.name or ""
                if name_part and name_part in name:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await self.js.delete_consumer(self.stream, name)
                        deleted.append(name)
        return deleted

    async def close(self) -> None:
        self._state["closing"] = True
        if self.nc.is_connected:
            try:
                await self.flush_publishes()
                await self.nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self.nc.close()
        elif not self.nc.is_closed:
            await self.nc.close()


class Follower:
    """An ordered consumer: one conversation's events of some types, from a stream position,
    each exactly once and in stream order (the owner of a claimed utterance or reply reads
    its audio or sentences this way, even those published before it started)."""

    def __init__(self, bus: Bus, filter_subjects: list[str], start_seq: int) -> None:
        self.bus = bus
        self.filter_subjects = filter_subjects
        self.new_only = start_seq <= 0
        """start_seq 0: only what is published from now on."""
        self.start_seq = max(1, start_seq)
        self._sub: Any = None

    async def __aenter__(self) -> Follower:
        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
            if self.new_only
            else ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.start_seq
            )
        )
        subject = self.filter_subjects[0]
        if len(self.filter_subjects) > 1:
            config.filter_subjects = self.filter_subjects
        self._sub = await self.bus.js.subscribe(
            subject,
            stream=self.bus.stream,
            ordered_consumer=True,
            config=config,
            pending_bytes_limit=64 * 1024 * 1024,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @property
    def pending(self) -> int:
        return int(self._sub.pending_msgs) if self._sub is not None else 0

    async def next(self, timeout: float) -> Followed | None:
        """The next event, or None on timeout."""
        assert self._sub is not None, "use `async with bus.follow(...)`"
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        try:
            event: Event | None = decode(msg.data)
        except EventDecodeError:
            event = None
        return Followed(event, _stream_seq(msg), extract_context(dict(msg.headers or {})))


def _stream_seq(msg: Msg) -> int:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # core-NATS message, or metadata missing
        return 0


def _num_delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


class Consumer:
    """A durable pull consumer. Run it with `await consumer.run()`; `stop()` drains it."""

    def __init__(
        self,
        bus: Bus,
        durable: str,
        filter_subjects: list[str],
        handler: Handler | None,
        batch_handler: BatchHandler | None,
        *,
        batch: int = 64,
        fetch_timeout: float = 0.5,
        max_ack_pending: int = 2048,
        ack_wait: float = 30.0,
        max_deliver: int = 5,
        deliver_policy: DeliverPolicy = DeliverPolicy.NEW,
        retry_delay: float = 0.5,
        dedupe_window: int = 20_000,
        inactive_threshold: float | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler or batch_handler")
        self.bus = bus
        self.durable = durable
        self.filter_subjects = filter_subjects
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.max_ack_pending = max_ack_pending
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.deliver_policy = deliver_policy
        self.retry_delay = retry_delay
        self.inactive_threshold = inactive_threshold
        # Ids handled by this process: a redelivery whose ack was lost is acked, not redone.
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._dedupe_window = dedupe_window
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.skipped_duplicates = 0

    async def start(self) -> Consumer:
        config = ConsumerConfig(
            # The name puts the durable (and a single filter) in the API subject
            # (CONSUMER.CREATE.<stream>.<name>), where NATS permissions can check it.
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # we dead-letter ourselves after max_deliver, with the reason
            max_ack_pending=self.max_ack_pending,
            deliver_policy=self.deliver_policy,
            # A tool run's durables go away by themselves if the tool dies without cleaning up.
            inactive_threshold=self.inactive_threshold,
        )
        if len(self.filter_subjects) == 1:
            config.filter_subject = self.filter_subjects[0]
        else:
            config.filter_subjects = self.filter_subjects
        add = lambda: self.bus.js.add_consumer(self.bus.stream, config)  # noqa: E731
        try:
            await retry_transient(add, what=f"consumer {self.durable}")
        except nats.js.errors.BadRequestError as exc:
            # Existing durable with other settings (e.g. a new filter): update what may change.
            if exc.err_code not in (10148, 10013, 10105):
                raise
            await retry_transient(add, what=f"consumer {self.durable}")
        self._sub = await self.bus.js.pull_subscribe_bind(self.durable, stream=self.bus.stream)
        return self

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if self._sub is None:
            await self.start()
        try:
            while not self._stopping.is_set():
                await self.run_once()
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the pull subscription (the durable consumer stays on the server)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._release_queued(sub)
            try:
                await sub.unsubscribe()
            except (TimeoutError, nats.errors.Error):
                pass

    async def _release_queued(self, sub: Any) -> None:
        """Give back the deliveries that came for the last pull after its fetch returned:
        nats.py keeps them in the subscription's queue for the next fetch, and on a stop
        there is none, so they waited out the ack wait (43 of them after a SIGTERM)."""
        queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if not msg.reply:
                continue  # a pull's status message (no messages, timeout): no delivery
            try:
                await msg.nak()
            except (TimeoutError, nats.errors.Error):
                return  # the connection is gone: the ack wait gives them back

    async def run_once(self) -> int:
        """Fetch one batch and process it; returns the number of messages seen."""
        assert self._sub is not None, "call start() first"
        try:
            msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.ConnectionDrainingError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            nats.js.errors.APIError,
        ):
            # Server restarting: the reconnect logic brings us back; do not spin.
            await asyncio.sleep(0.2)
            return 0
        deliveries: list[Delivery] = []
        for msg in msgs:
            d = await self._decode(msg)
            if d is not None:
                deliveries.append(d)
        if not deliveries:
            return len(msgs)
        if self.batch_handler is not None:
            await self._run_batch(deliveries)
        else:
            for i, d in enumerate(deliveries):
                if self._stopping.is_set():
                    await self._release(deliveries[i:])
                    break
                await self._run_one(d)
        return len(msgs)

    async def _decode(self, msg: Msg) -> Delivery | None:
        try:
            event = decode(msg.data)
        except EventDecodeError as exc:
            await self._reject(msg, exc.reason)
            return None
        headers = dict(msg.headers or {})
        if headers.get(MSG_ID, event.event_id) != event.event_id:
            await self._reject(
                msg, f"Nats-Msg-Id {headers[MSG_ID]!r} != event id {event.event_id!r}"
            )
            return None
        if event.event_id in self._seen:
            self.skipped_duplicates += 1
            await _ack(msg)
            return None
        return Delivery(
            event=event,
            subject=msg.subject,
            headers=headers,
            num_delivered=_num_delivered(msg),
            stream_seq=_stream_seq(msg),
            context=extract_context(headers),
            msg=msg,
        )

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Give fetched, unstarted messages back at once (stopping): another instance takes
        them now instead of after the ack wait, and the delivery is not a failure."""
        for d in deliveries:
            await d.nak(0)

    async def _reject(self, msg: Msg, reason: str) -> None:
        try:
            await self.bus.dead_letter(self.durable, msg, reason)
        except Exception as exc:  # DLQ unreachable: leave unacked, it comes back
            log.error("dead-letter failed", extra={"error": repr(exc), "reason": reason})
            return
        self.dead_lettered += 1
        await _ack(msg)

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self._dedupe_window:
            self._seen.popitem(last=False)

    async def _run_one(self, d: Delivery) -> None:
        assert self.handler is not None
        token = otel_context.attach(d.context)
        try:
            await self.handler(d.event, d)
        except asyncio.CancelledError:
            raise
        except Released:
            await d.nak(0)
            return
        except Exception as exc:
            await self._failed(d, exc)
            return
        finally:
            otel_context.detach(token)
        self.processed += 1
        if d.deferred:
            return  # the handler acks it when the work is really done
        self._remember(d.event.event_id)
        await _ack(d.msg)

    async def _run_batch(self, deliveries: list[Delivery]) -> None:
        assert self.batch_handler is not None
        try:
            await self.batch_handler(deliveries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for d in deliveries:
                await self._failed(d, exc)
            return
        for d in deliveries:
            if d.deferred:
                continue  # the handler acks it once its work is durable
            self._remember(d.event.event_id)
            await _ack(d.msg)
        self.processed += len(deliveries)

    async def _failed(self, d: Delivery, exc: Exception) -> None:
        reason = f"handler failed on delivery {d.num_delivered}: {exc.__class__.__name__}: {exc}"
        if d.num_delivered >= self.max_deliver:
            await self._reject(d.msg, reason)
            return
        log.warning(
            "handler failed; will retry", extra={"consumer": self.durable, "reason": reason}
        )
        try:
            await d.msg.nak(delay=self.retry_delay * d.num_delivered)
        except nats.errors.Error:
            pass  # ack_wait expiry redelivers it anyway


async def _ack(msg: Msg) -> None:
    try:
        await msg.ack()
    except nats.errors.Error as exc:
        # Lost ack = redelivery later, absorbed by idempotent handlers.
        log.info("ack failed", extra={"error": repr(exc)})
