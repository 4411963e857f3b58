"""Garbage on the bus: the recorder logs every valid event, dead-letters the rest, lives on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import nats.js.api
import pytest

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import DLQ_STREAM, MSG_ID, Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess

CONV = "fuzz"


def valid_events(rng: random.Random, n: int) -> list[s.Event]:
    """A mix of event types; audio chunks of one utterance arrive out of order."""
    out: list[s.Event] = []
    order = list(range(n // 2))
    rng.shuffle(order)
    for i in order:
        pcm = bytes(rng.getrandbits(8) for _ in range(2 * rng.randint(0, 400)))
        out.append(
            s.MicAudioChunk(
                endpoint="device", conversation_id=CONV, utterance_id="u1", seq=i, audio=pcm
            )
        )
    for i in range(n - len(out)):
        out.append(
            s.Transcript(
                endpoint="device",
                conversation_id=CONV,
                utterance_id=f"u{i + 2}",
                text="".join(rng.choice('abc \u00e9\u4e2d\U0001f600"\\') for _ in range(20)),
                ts=rng.choice([0.0, 1e9, 2e9]),
            )
        )
    return out


def garbage(rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    """(subject, body, headers) that no consumer may accept."""
    chunk = s.MicAudioChunk(
        endpoint="device", conversation_id=CONV, utterance_id="g", audio=b"\0\0" * 8
    )
    head = s.encode(chunk).partition(b"\n")[0]
    doc = json.loads(head)
    tx = json.loads(
        s.encode(s.Transcript(endpoint="device", conversation_id=CONV, utterance_id="g", text="t"))
    )

    def variant(**changes: object) -> bytes:
        return json.dumps({**doc, **changes}, allow_nan=True).encode() + b"\n\0\0"

    cases = [
        b"",
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))),
        s.encode(chunk)[: rng.randint(1, len(head) - 1)],  # truncated frame
        head,  # audio event without its payload
        head + b"\n" + b"\0" * 3,  # half a sample
        head + b"\n" + b"\0" * (s.MAX_PAYLOAD_BYTES + 2),  # oversized
        variant(rate=8000),  # wrong sample rate
        variant(schema_version=7),  # from the future
        variant(type="mic.telepathy"),
        variant(seq=-1),
        variant(offset_ms=float("nan")),
        variant(offset_ms=float("inf")),
        variant(endpoint="device", conversation_id="a.b.>"),  # not a subject token
        json.dumps({**tx, "text": "x" * 20_000}).encode(),
        json.dumps(tx).encode() + b"\nunexpected payload",
        b"[" * 50_000,  # nested too deeply for the JSON parser
        b"\xff\xfe" + b"\0" * 10,
    ]
    out = []
    for i, body in enumerate(cases):
        out.append((f"voice.device.{CONV}.mic.audio-chunk", body, {MSG_ID: f"garbage-{i}"}))
    # A valid body whose Nats-Msg-Id is not its event id: a forged or mangled header.
    forged = s.Transcript(endpoint="device", conversation_id=CONV, utterance_id="g", text="forged")
    out.append((forged.subject(), s.encode(forged), {MSG_ID: "someone-else"}))
    return out


async def dead_letters(bus: Bus, consumer: str) -> list[nats.aio.msg.Msg]:
    sub = await bus.js.pull_subscribe(
        f"dlq.*.{consumer}",
        stream=DLQ_STREAM,
        config=nats.js.api.ConsumerConfig(deliver_policy=nats.js.api.DeliverPolicy.ALL),
    )
    msgs: list[nats.aio.msg.Msg] = []
    try:
        while True:
            msgs += await sub.fetch(100, timeout=1.0)
    except (TimeoutError, nats.errors.TimeoutError):
        pass
    await sub.unsubscribe()
    return msgs


@pytest.mark.parametrize("seed", [7])
async def test_recorder_logs_every_valid_event_and_dead_letters_the_garbage(
    bus: Bus, settings: Settings, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    log_file = tmp_path / "recorder.log"
    recorder = WorkerProcess("recorder", settings, log_file=log_file).start()
    try:
        await recorder.wait_consumer(bus, timeout=60)
        valid = valid_events(rng, 60)
        bad = garbage(rng)
        mixed: list[object] = [*valid, *bad]
        rng.shuffle(mixed)
        for item in mixed:
            if isinstance(item, s.Event):
                await bus.publish(item)
            else:
                subject, body, headers = item  # type: ignore[misc]
                await bus.js.publish(subject, body, headers=headers)
        log = EventLog(settings.db_url)
        await wait_for(lambda: log.count(CONV) >= len(valid), 30)
        dlq = await wait_for(
            lambda: _enough(dead_letters(bus, "recorder"), len(bad)), 30, interval=0.2
        )
        assert recorder.running, log_file.read_text()[-3000:]
        # Nothing valid lost, nothing invalid recorded.
        assert {e.event_id for e in log.events(conversation_id=CONV)} == {e.event_id for e in valid}
        reasons = [m.headers["Dlq-Reason"] for m in dlq]
        assert len(reasons) == len(bad) and all(reasons)
        assert any("unknown schema version 7" in r for r in reasons)
        assert any("Nats-Msg-Id 'someone-else'" in r for r in reasons)
        # Still at work afterwards.
        late = s.Transcript(
            endpoint="device", conversation_id=CONV, utterance_id="late", text="still here"
        )
        await bus.publish(late)
        await wait_for(lambda: log.count(CONV) == len(valid) + 1, 10)
        log.close()
    finally:
        code = recorder.stop()
    assert code == 0, log_file.read_text()[-3000:]


async def _enough(msgs_coro, n: int):  # type: ignore[no-untyped-def]
    msgs = await msgs_coro
    return msgs if len(msgs) >= n else None
