"""Shared fixtures: a real nats-server per test (own port, own store), a real SQLite file."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.natsd import NatsServer, auth_config, free_port
from workers.runtime.streams import setup as setup_streams

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port; `.kill()`/`.start()` restart it
    on the same store."""
    server = NatsServer(free_port(), tmp_path / "nats", sync_interval="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> Settings:
    """Operator settings against `nats_server`, whose streams are set up (as `just up` does
    before it starts workers)."""
    s = Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{(tmp_path / 'voice.db').as_posix()}",
        _env_file=None,  # type: ignore[call-arg]
    )
    nats_setup(s)
    return s


def nats_setup(settings: Settings) -> None:
    """`just nats-setup` from sync code, even when an event loop runs in this thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, setup_streams(settings)).result()


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    b = await Bus.connect(settings, name="test")
    try:
        yield b
    finally:
        await b.close()


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await asyncio.sleep(interval)


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import os
    import uuid

    import psycopg

    admin = os.environ.get("PG_ADMIN_URL", PG_ADMIN_URL)
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {admin}: {exc}")
    name = f"voicebus_test_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'log.db').as_posix()}"
    else:
        yield from _pg_database()


@pytest.fixture
def auth_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings of the operator against a nats-server that requires the role users."""
    port = free_port()
    base = Settings(
        nats_url=f"nats://127.0.0.1:{port}",
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{(tmp_path / 'voice.db').as_posix()}",
        _env_file=None,  # type: ignore[call-arg]
    )
    server = NatsServer(
        port, tmp_path / "nats", "1s", extra_config=auth_config(base), log_file=tmp_path / "n.log"
    )
    server.start()
    try:
        yield base
    finally:
        server.stop()
