"""The bus on a real nats-server: typed delivery, dead letters, retries, server restarts."""

from __future__ import annotations

import asyncio

from nats.js.api import DeliverPolicy

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus, Delivery
from workers.runtime.natsd import NatsServer


def chunk(i: int, utt: str = "u1") -> s.MicAudioChunk:
    return s.MicAudioChunk(
        endpoint="device", conversation_id="c1", utterance_id=utt, seq=i, audio=b"\x00\x01" * 320
    )


async def test_published_events_reach_the_handler_typed_and_in_order(bus: Bus) -> None:
    got: list[s.Event] = []

    async def handle(event: s.Event, d: Delivery) -> None:
        got.append(event)

    consumer = await bus.consumer("t", [s.subject_filter()], handle).start()
    sent = [chunk(i) for i in range(20)]
    for ev in sent:
        ack = await bus.publish(ev)
        assert not ack.duplicate
    while len(got) < 20:
        await consumer.run_once()
    assert got == sent
    assert all(isinstance(e, s.MicAudioChunk) for e in got)


async def test_republishing_an_event_id_is_deduplicated_by_jetstream(bus: Bus) -> None:
    ev = chunk(0)
    assert not (await bus.publish(ev)).duplicate
    assert (await bus.publish(ev)).duplicate


async def test_invalid_messages_go_to_the_dead_letter_subject_and_the_consumer_goes_on(
    bus: Bus,
) -> None:
    got: list[s.Event] = []

    async def handle(event: s.Event, d: Delivery) -> None:
        got.append(event)

    consumer = await bus.consumer("dl", [s.subject_filter()], handle).start()
    await bus.publish(chunk(0))
    bad = [
        (b"not json at all", "not JSON"),
        (b'{"type": "mic.audio-chunk", "schema_version": 7}\n', "unknown schema version"),
        (
            b'{"type": "stt.transcript", "endpoint": "device", "conversation_id": "c1",'
            b' "utterance_id": "u"}',
            "text",
        ),
    ]
    for i, (body, _) in enumerate(bad):
        await bus.js.publish(
            "voice.device.c1.mic.audio-chunk", body, headers={"Nats-Msg-Id": f"bad{i}"}
        )
    await bus.publish(chunk(1))
    while len(got) < 2:
        await consumer.run_once()
    assert [e.seq for e in got] == [0, 1]
    assert consumer.dead_lettered == 3

    dlq = await bus.js.pull_subscribe("dlq.cli.dl", durable="dlq-reader", stream="VOICE_DLQ")
    letters = await dlq.fetch(3, timeout=2)
    for msg, (body, reason) in zip(letters, bad, strict=True):
        assert msg.data == body  # the original bytes are kept
        assert reason in msg.headers["Dlq-Reason"]
        assert msg.headers["Dlq-Subject"] == "voice.device.c1.mic.audio-chunk"


async def test_a_failing_handler_is_retried_then_dead_lettered_with_the_reason(bus: Bus) -> None:
    attempts: dict[str, int] = {}

    async def handle(event: s.Event, d: Delivery) -> None:
        attempts[event.event_id] = attempts.get(event.event_id, 0) + 1
        if event.seq == 1:
            raise RuntimeError("model exploded")

    consumer = await bus.consumer(
        "flaky", [s.subject_filter()], handle, max_deliver=3, retry_delay=0.01
    ).start()
    events = [chunk(i) for i in range(3)]
    for ev in events:
        await bus.publish(ev)

    async def settled() -> bool:
        await consumer.run_once()
        return consumer.dead_lettered == 1 and consumer.processed == 2

    await wait_for(settled)
    assert attempts[events[1].event_id] == 3
    assert attempts[events[0].event_id] == attempts[events[2].event_id] == 1
    msg = await bus.js.get_last_msg("VOICE_DLQ", "dlq.cli.flaky")
    assert "model exploded" in msg.headers["Dlq-Reason"]


async def test_consumer_survives_a_kill_9_of_the_server(bus: Bus, nats_server: NatsServer) -> None:
    got: dict[str, s.Event] = {}

    async def handle(event: s.Event, d: Delivery) -> None:
        got[event.event_id] = event

    consumer = await bus.consumer(
        "survivor", [s.subject_filter()], handle, deliver_policy=DeliverPolicy.ALL
    ).start()
    runner = asyncio.create_task(consumer.run())
    first = [chunk(i) for i in range(10)]
    for ev in first:
        await bus.publish(ev)
    await wait_for(lambda: len(got) >= 10)
    nats_server.kill()
    await asyncio.sleep(0.3)
    nats_server.start()
    await wait_for(lambda: bus.nc.is_connected, timeout=15)
    second = [chunk(i, "u2") for i in range(10)]
    for ev in second:
        await bus.publish(ev)
    await wait_for(lambda: len(got) >= 20, timeout=20)
    consumer.stop()
    await runner
    assert set(got) == {e.event_id for e in first + second}
