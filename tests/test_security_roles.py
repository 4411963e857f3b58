"""Each role's credentials against a real nats-server with the generated config: every attack
on streams, on other roles' durables, inboxes and dead letters is refused; the pipeline still
works under the same config."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

import schemas as s
from tests.conftest import ROOT, wait_for
from workers.runtime.bus import DLQ_STREAM, Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import free_port
from workers.runtime.procs import settings_env
from workers.runtime.security import OPERATOR, ROLES, inbox_prefix
from workers.runtime.streams import setup as setup_streams

WORKER_ROLES = [r for r in ROLES if r != OPERATOR]
#: A service durable of another role, per attacking role.
VICTIM = {role: "recorder" for role in WORKER_ROLES} | {"recorder": "speaker-device"}


async def _victim_with_a_pending_message(admin: Bus, durable: str) -> str:
    """The victim durable (as its service would create it) holding one unacked delivery;
    returns that delivery's ack subject."""
    await admin.publish(
        s.Transcript(endpoint="device", conversation_id="c", utterance_id="u", text="hi")
    )
    await admin.js.add_consumer(
        admin.stream,
        ConsumerConfig(
            name=durable,
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject="voice.>",
            ack_wait=600,
        ),
    )
    sub = await admin.js.pull_subscribe_bind(durable, stream=admin.stream)
    (msg,) = await sub.fetch(1, timeout=5)
    await sub.unsubscribe()
    return msg.reply


async def _attack(settings: Settings, role: str, ack_subject: str) -> tuple[list[str], int]:
    """Every attack of the issue as `role`; returns (what got through, violations seen)."""
    bus = await Bus.connect(settings.for_worker(role), name=f"attacker-{role}")
    violations: list[str] = []

    async def error_cb(exc: Exception) -> None:
        violations.append(str(exc))

    bus.nc._error_cb = error_cb
    nc, api, victim = bus.nc, "$JS.API", VICTIM[role]
    through: list[str] = []

    async def request(subject: str, body: dict[str, object] | None = None) -> None:
        try:
            reply = await nc.request(subject, json.dumps(body or {}).encode(), timeout=1.0)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return  # dropped by the server: refused
        if b'"error"' not in reply.data:
            through.append(subject)

    shrink = StreamConfig(name=bus.stream, subjects=["voice.>"], max_msgs=1).as_dict()
    ephemeral = {"durable_name": victim, "name": victim, "filter_subject": "voice.*.*.stt.>"}
    retarget = {"durable_name": victim, "name": victim, "filter_subject": "voice.*.*.mic.>"}
    await asyncio.gather(
        *(
            request(f"{api}.STREAM.{op}.{name}", {"name": name, **shrink})
            for op in ("UPDATE", "CREATE", "DELETE", "PURGE")
            for name in (bus.stream, DLQ_STREAM, "EVIL")
        ),
        request(f"{api}.CONSUMER.CREATE.{bus.stream}.{victim}", {"config": retarget}),
        request(
            f"{api}.CONSUMER.CREATE.{bus.stream}.{victim}.voice.*.*.mic.>", {"config": retarget}
        ),
        request(f"{api}.CONSUMER.DURABLE.CREATE.{bus.stream}.{victim}", {"config": retarget}),
        request(f"{api}.CONSUMER.CREATE.{bus.stream}", {"config": ephemeral}),
        request(f"{api}.CONSUMER.DELETE.{bus.stream}.{victim}"),
        request(f"{api}.CONSUMER.MSG.NEXT.{bus.stream}.{victim}", {"batch": 1, "expires": 5e8}),
    )
    await nc.publish(ack_subject, b"+ACK")  # forge the victim's ack
    await nc.publish(f"dlq.{victim}.{victim}", b"forged dead letter")
    # Other roles' inboxes, and the default prefix every other client replies on.
    other = next(r for r in WORKER_ROLES if r != role)
    for subject in ("_INBOX.>", f"{inbox_prefix(other)}.>", "voice.>"):
        await nc.subscribe(subject)
    await nc.flush()
    await asyncio.sleep(0.3)  # the server's -ERR for the last subscriptions
    await bus.close()
    return through, len(violations)


async def test_no_role_can_touch_streams_other_roles_durables_inboxes_or_dead_letters(
    auth_settings: Settings,
) -> None:
    await setup_streams(auth_settings)
    admin = await Bus.connect(auth_settings, name="cli")
    try:
        acks = {v: await _victim_with_a_pending_message(admin, v) for v in set(VICTIM.values())}
        before = await admin.js.stream_info(admin.stream)
        results = await asyncio.gather(
            *(_attack(auth_settings, role, acks[VICTIM[role]]) for role in WORKER_ROLES)
        )
        for role, (through, violations) in zip(WORKER_ROLES, results, strict=True):
            assert through == [], f"{role} got through: {through}"
            # 12 stream ops + 6 consumer requests + 2 forged publishes + 3 subscriptions
            # (a role may follow its own inbox only).
            assert violations >= 22, (role, violations)
        after = await admin.js.stream_info(admin.stream)
        assert after.config.max_msgs == before.config.max_msgs
        assert after.state.messages == before.state.messages
        for victim in acks:
            info = await admin.js.consumer_info(admin.stream, victim)
            assert info.config.filter_subject == "voice.>"
            assert info.num_ack_pending == 1, f"{victim}'s delivery was acked by another role"
            assert info.delivered.stream_seq == 1
        dlq = await admin.js.stream_info(DLQ_STREAM)
        assert dlq.state.messages == 0
        assert "EVIL" not in [si.config.name for si in await admin.js.streams_info()]
    finally:
        await admin.close()


async def test_each_role_still_does_its_own_consumer_work(auth_settings: Settings) -> None:
    """Its own durable (create, pull, ack), an ephemeral follower, its own dead letters."""
    await setup_streams(auth_settings)
    stt = await Bus.connect(auth_settings.for_worker("stt-2"), name="stt-2")
    got: list[s.Event] = []

    async def handle(event: s.Event, d: object) -> None:
        got.append(event)

    try:
        assert stt.nc._inbox_prefix.decode() == "_INBOX_stt"
        consumer = await stt.consumer("stt-pool1", ["voice.*.*.mic.>"], handle).start()
        mic = await Bus.connect(auth_settings.for_worker("mic"), name="mic")
        started = s.VoiceStarted(endpoint="device", conversation_id="c9", utterance_id="u1")
        await mic.publish(started)
        await mic.close()
        await wait_for(lambda: consumer.run_once(), 10)
        assert [e.event_id for e in got] == [started.event_id]
        async with stt.follow(["voice.device.c9.mic.>"], 1) as follower:
            followed = await follower.next(5)
            assert followed is not None and followed.event == started
        await consumer.close()
        assert await stt.last("device", "c9", s.VoiceStarted.type) == started
    finally:
        await stt.close()


def _run_worker(env: dict[str, str], module: str = "recorder") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"workers.{module}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_a_worker_with_an_unknown_role_or_without_streams_stops_with_one_line(
    auth_settings: Settings,
) -> None:
    env = settings_env(auth_settings) | {"PYTHONPATH": str(ROOT)}
    env.pop("NATS_USER", None), env.pop("NATS_PASSWORD", None)
    unknown = _run_worker(env | {"WORKER_ID": "gpu-box"})
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip().splitlines() == [unknown.stderr.strip()]
        and "WORKER_ID='gpu-box' names no worker role" in unknown.stderr
    ), unknown.stderr
    # The streams are not there yet: the worker does not create them, it says what to run.
    missing = _run_worker(env | {"WORKER_ID": "recorder"})
    assert missing.returncode == 2, missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "run `just nats-setup`" in missing.stderr
    # An operator's credentials handed down do not make an unknown name the operator.
    handed = os.environ | env | {"WORKER_ID": "bench", "NATS_USER": "cli"}
    assert _run_worker(handed).returncode == 2


def test_a_demo_turn_runs_under_the_generated_permissions(tmp_path: Path) -> None:
    """The embedded server with auth (what `just demo` starts): every worker with its role's
    credentials, one whole turn, and not one permission violation in the server's log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "WORKER_ID"))} | {
        "PYTHONPATH": str(ROOT),
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'voice.db').as_posix()}",
    }
    demo = subprocess.run(
        [sys.executable, "-m", "workers.cli.demo", "--json", "--fast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    (turn,) = json.loads(demo.stdout.strip().splitlines()[-1])["turns"]
    assert turn["transcript"] and turn["reply_text"]
    log = (tmp_path / "data" / "nats" / "nats-server.log").read_text()
    assert "authorization" in (tmp_path / "data" / "nats" / "nats-server.conf").read_text()
    assert "Violation" not in log, [ln for ln in log.splitlines() if "Violation" in ln][:5]
