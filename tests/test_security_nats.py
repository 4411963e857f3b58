"""NATS security: loopback, one authenticated user per worker role, least privilege."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import nats
import pytest

import schemas as s
from tests.conftest import ROOT, wait_for
from workers.runtime.bus import Bus, BusError
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.natsd import nats_server_binary
from workers.runtime.procs import WorkerProcess, settings_env
from workers.runtime.security import (
    ROLES,
    UnknownRoleError,
    credentials_file,
    passwords,
    read_credentials,
    role_of,
    shipped_config,
)
from workers.runtime.streams import require_streams
from workers.runtime.streams import setup as setup_streams


async def connect_as(settings: Settings, worker_id: str) -> tuple[Bus, list[str]]:
    """A bus for `worker_id` with its role's credentials, and the errors the server sent."""
    bus = await Bus.connect(settings.for_worker(worker_id), name=worker_id)
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc))

    bus.nc._error_cb = error_cb  # the bus' own callback only logs
    return bus, errors


def transcript(conv: str = "c1") -> s.Transcript:
    return s.Transcript(
        endpoint="device", conversation_id=conv, utterance_id="u1", producer="x", text="hello"
    )


async def test_the_embedded_server_config_binds_loopback_and_requires_auth(
    auth_settings: Settings, tmp_path: Path
) -> None:
    conf = (tmp_path / "nats" / "nats-server.conf").read_text()
    assert "listen: 127.0.0.1:" in conf and "authorization {" in conf
    assert stat.S_IMODE(os.stat(tmp_path / "nats" / "nats-server.conf").st_mode) == 0o600
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        nc = await nats.connect(
            auth_settings.nats_url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet
        )
        await nc.close()


async def _quiet(exc: Exception) -> None:
    pass


async def test_a_wrong_password_is_named_even_when_another_server_of_the_list_times_out(
    auth_settings: Settings,
) -> None:
    # A listener that never speaks: connecting to it times out, like a loaded or dying node.
    # Whichever server nats.py tried last, the refusal seen on the other is the news.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"nats://127.0.0.1:{silent.getsockname()[1]},{auth_settings.nats_url}"
        wrong = auth_settings.model_copy(
            update={"nats_url": url, "nats_user": "cli", "nats_password": "wrong"}
        )
        for _ in range(4):  # nats.py shuffles the list: each order ends on either server
            with pytest.raises(BusError, match=r"refused user 'cli': wrong or missing"):
                await Bus.connect(wrong, name="test", connect_timeout=0.3)
    finally:
        silent.close()


async def test_a_worker_is_denied_a_subject_it_has_no_right_to(auth_settings: Settings) -> None:
    await setup_streams(auth_settings)
    tts, errors = await connect_as(auth_settings, "tts-1")
    try:
        await require_streams(tts)
        # Its own events go through ...
        done = s.TtsDone(
            endpoint="device",
            conversation_id="c1",
            utterance_id="u1",
            sentences=0,
            chunks=0,
            audio_ms=0.0,
        )
        assert (await tts.publish(done)).seq >= 1
        # ... another stage's do not: the server drops them, JetStream never acks (retry_s=0:
        # waiting out the retries for an ack that cannot come only slows the test).
        with pytest.raises(nats.errors.TimeoutError):
            await tts.publish(transcript(), timeout=1.0, retry_s=0)
        await wait_for(lambda: any("permissions violation" in e.lower() for e in errors), 5)
        assert any("voice.device.c1.stt.transcript" in e for e in errors)
        # Nor may it barge in, read voice subjects directly or delete the record.
        interrupt = s.Interrupt(endpoint="device", conversation_id="c1", utterance_id="u1")
        with pytest.raises(nats.errors.TimeoutError):
            await tts.publish(interrupt, timeout=1.0, retry_s=0)
        await tts.nc.subscribe("voice.>")
        with pytest.raises(nats.errors.TimeoutError):
            await tts.js.purge_stream(tts.stream)
        await wait_for(lambda: any("subscription to" in e.lower() for e in errors), 5)
    finally:
        await tts.close()
    admin = await Bus.connect(auth_settings, name="cli")
    try:
        info = await admin.js.stream_info(admin.stream, subjects_filter="voice.>")
        assert set(info.state.subjects or {}) == {"voice.device.c1.tts.done"}
    finally:
        await admin.close()


async def test_each_role_does_its_own_job_under_auth(
    auth_settings: Settings, tmp_path: Path
) -> None:
    """stt publishes a transcript, the speaker an interrupt, the recorder process logs both."""
    await setup_streams(auth_settings)
    admin = await Bus.connect(auth_settings, name="cli")
    recorder = WorkerProcess(
        "recorder",
        auth_settings.for_worker("recorder"),
        log_file=tmp_path / "recorder.log",
    ).start()
    try:
        await recorder.wait_consumer(admin, timeout=60)
        stt, _ = await connect_as(auth_settings, "stt-2")
        speaker, _ = await connect_as(auth_settings, "speaker")
        await stt.publish(transcript("c2"))
        await speaker.publish(
            s.Interrupt(endpoint="device", conversation_id="c2", utterance_id="u1")
        )
        await stt.close()
        await speaker.close()
        log = EventLog(auth_settings.db_url)
        await wait_for(lambda: log.count("c2") == 2, 30)
        log.close()
    finally:
        assert recorder.stop() == 0, (tmp_path / "recorder.log").read_text()[-2000:]
        await admin.close()
    assert "Violation" not in (tmp_path / "n.log").read_text()


def test_workers_spawned_by_a_cli_get_their_own_role(tmp_path: Path) -> None:
    cli = Settings(data_dir=tmp_path / "d", _env_file=None)  # type: ignore[call-arg]
    assert cli.nats_user == "cli" and cli.nats_password
    env = settings_env(cli, WORKER_ID="stt-3")
    child = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-c",
            "from workers.runtime.config import Settings; s = Settings(_env_file=None);"
            "print(s.nats_user, s.nats_password)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    user, password = child.stdout.split()
    assert user == "stt" and password == read_credentials(credentials_file(tmp_path / "d"))["stt"]
    # Explicit credentials that are not the project's own are left alone.
    mine = Settings(
        data_dir=tmp_path / "d",
        worker_id="stt-3",
        nats_user="alice",
        nats_password="pw",
        _env_file=None,  # type: ignore[call-arg]
    )
    assert (mine.nats_user, mine.nats_password) == ("alice", "pw")
    assert [role_of(w) for w in ("stt-12", "recorder", "speaker-2", "stt-gpu", "")] == [
        "stt",
        "recorder",
        "speaker",
        "stt",
        "cli",
    ]
    for name in ("bench", "gpu-box", "sttx-1"):  # never the operator by default
        with pytest.raises(UnknownRoleError):
            role_of(name)


def test_credentials_are_generated_once_private_and_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = passwords(tmp_path)
    path = credentials_file(tmp_path)
    assert set(first) == set(ROLES) and len(set(first.values())) == len(ROLES)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert passwords(tmp_path) == first
    monkeypatch.setenv("NATS_PASSWORD_TTS", "from-env")
    assert passwords(tmp_path)["tts"] == "from-env"


def test_the_shipped_config_is_the_permission_table_and_nats_accepts_it(tmp_path: Path) -> None:
    shipped = (ROOT / "ops" / "nats" / "nats.conf").read_text()
    assert shipped == shipped_config(), (
        "regenerate: python -m workers.runtime.security --shipped-config"
    )
    assert "listen: 127.0.0.1:" in shipped and 'sync_interval: "1s"' in shipped
    env = dict(os.environ) | {f"NATS_PASSWORD_{r.upper()}": "x" for r in ROLES}
    ok = subprocess.run(
        [str(nats_server_binary()), "-c", str(ROOT / "ops" / "nats" / "nats.conf"), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "valid" in (ok.stdout + ok.stderr), ok.stderr


async def test_the_wyoming_bridge_publishes_only_its_endpoints_input(
    auth_settings: Settings,
) -> None:
    await setup_streams(auth_settings)
    bridge, errors = await connect_as(auth_settings, "wyoming")
    try:
        await require_streams(bridge)
        mine = {"endpoint": "wyoming", "conversation_id": "c3", "utterance_id": "u1"}
        # Its endpoint's input goes through: a binding, audio, a typed question, text to speak.
        await bridge.publish(s.binding("wyoming", "c3", "wyoming", last_stage="stt"))
        await bridge.publish(s.VoiceStarted(**mine))
        await bridge.publish(s.Transcript(**mine, text="hi"))
        await bridge.publish(s.ReplyStarted(**mine))
        await bridge.publish(s.Interrupt(**mine, reason="user"))
        await bridge.nc.subscribe("voice.wyoming.>")
        # Another endpoint's input, or a worker's output on its own endpoint, does not.
        other = {**mine, "endpoint": "device"}
        with pytest.raises(nats.errors.TimeoutError):
            await bridge.publish(s.VoiceStarted(**other), timeout=1.0, retry_s=0)
        with pytest.raises(nats.errors.TimeoutError):
            await bridge.publish(
                s.TtsDone(**mine, sentences=0, chunks=0, audio_ms=0.0), timeout=1.0, retry_s=0
            )
        await bridge.nc.subscribe("voice.device.>")
        await wait_for(lambda: any("subscription to" in e.lower() for e in errors), 5)
        assert any("voice.device.c3.mic.voice-started" in e for e in errors)
        assert any("voice.wyoming.c3.tts.done" in e for e in errors)
    finally:
        await bridge.close()


async def test_the_web_gateway_publishes_only_its_own_endpoints_input(
    auth_settings: Settings,
) -> None:
    await setup_streams(auth_settings)
    gateway, errors = await connect_as(auth_settings, "web")
    try:
        await require_streams(gateway)
        mine = s.binding("web", "c1", "web", session="c1")
        assert (await gateway.publish(mine)).seq >= 1
        started = s.VoiceStarted(endpoint="web", conversation_id="c1", utterance_id="u1")
        assert (await gateway.publish(started)).seq >= 1
        barge = s.Interrupt(endpoint="web", conversation_id="c1", utterance_id="u0")
        assert (await gateway.publish(barge)).seq >= 1
        # Another endpoint's input, or another stage's events of its own endpoint: refused.
        for event in (
            s.VoiceStarted(endpoint="device", conversation_id="c2", utterance_id="u1"),
            s.binding("device", "c2", "device"),
            s.Transcript(endpoint="web", conversation_id="c1", utterance_id="u1", text="hi"),
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await gateway.publish(event, timeout=1.0, retry_s=0)
        await wait_for(lambda: sum("permissions violation" in e.lower() for e in errors) >= 3, 5)
    finally:
        await gateway.close()
    admin = await Bus.connect(auth_settings, name="cli")
    try:
        info = await admin.js.stream_info(admin.stream, subjects_filter="voice.>")
        assert set(info.state.subjects or {}) == {
            "voice.web.c1.endpoint.conversation-started",
            "voice.web.c1.mic.voice-started",
            "voice.web.c1.control.interrupt",
        }
    finally:
        await admin.close()
