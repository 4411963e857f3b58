"""A 3-node cluster of the embedded nats-server: workers take a list of servers and survive
the loss of any one node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.test_llm_support import transcript
from workers.runtime.bus import Bus, BusError
from workers.runtime.config import Settings
from workers.runtime.natscluster import NatsCluster, free_cluster_ports, wait_jetstream
from workers.runtime.natsd import NatsServerError, free_port, is_listening
from workers.runtime.procs import WorkerProcess
from workers.runtime.streams import ensure_streams

from .cluster_support import reply_done, wait_in_sync


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(
        free_cluster_ports(3),
        tmp_path / "cluster",
        sync_interval="always",
        log_dir=tmp_path / "cluster",
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


def cluster_settings(urls: list[str], tmp_path: Path) -> Settings:
    return Settings(
        nats_url=",".join(urls),
        stream_replicas=3,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{(tmp_path / 'voice.db').as_posix()}",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def cbus(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[Bus]:
    await wait_jetstream(cluster.urls)
    b = await Bus.connect(cluster_settings(cluster.urls, tmp_path), name="test")
    await ensure_streams(b)
    try:
        yield b
    finally:
        await b.close()


def test_nats_url_takes_a_list_of_servers() -> None:
    s = Settings(nats_url=" nats://a:1 ,nats://b:2,, nats://c:3", _env_file=None)  # type: ignore[call-arg]
    assert s.nats_servers == ["nats://a:1", "nats://b:2", "nats://c:3"]
    assert s.nats_url == "nats://a:1,nats://b:2,nats://c:3"  # what child processes get
    with pytest.raises(ValueError, match="NATS_URL is empty"):
        Settings(nats_url=" , ", _env_file=None)  # type: ignore[call-arg]


def test_a_cluster_whose_route_port_is_taken_is_refused_naming_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from workers.runtime.natscluster import ROUTE_PORT_OFFSET
    from workers.runtime.natsd import run_cluster

    base = free_cluster_ports(3)[0]
    taken = base + 1 + ROUTE_PORT_OFFSET
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))  # bound, not listening: still not free to a server
        settings = Settings(nats_url=f"nats://127.0.0.1:{base}", data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
        assert run_cluster(settings, 3) == 1
    err = capsys.readouterr().err
    assert f"port {taken} (route)" in err, err
    assert not is_listening(f"nats://127.0.0.1:{base}")  # no node was left running


def test_a_node_that_cannot_listen_says_why(tmp_path: Path) -> None:
    import socket

    from workers.runtime.natsd import NatsServer

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # not listening: only the server's exit can tell
        port = holder.getsockname()[1]
        node = NatsServer(port, tmp_path / "n", log_file=tmp_path / "n.log")
        try:
            with pytest.raises(NatsServerError, match=rf"exited with 1: .*{port}.*in use"):
                node.start()
        finally:
            node.stop()  # a server that did start (the test failing) is not left running


def test_a_cluster_needs_three_nodes(tmp_path: Path) -> None:
    with pytest.raises(NatsServerError, match="at least 3"):
        NatsCluster([free_port(), free_port()], tmp_path)


async def test_a_bus_connects_when_the_first_server_is_down(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    await wait_jetstream(cluster.urls)
    cluster.nodes[0].kill()
    assert not is_listening(cluster.urls[0])
    bus = await Bus.connect(cluster_settings(cluster.urls, tmp_path), name="test")
    try:
        assert bus.nc.connected_url is not None
        assert bus.nc.connected_url.port in (cluster.nodes[1].port, cluster.nodes[2].port)
    finally:
        await bus.close()


async def test_llm_started_with_the_first_of_three_urls_down_answers_and_survives_each_node(
    cluster: NatsCluster, cbus: Bus, tmp_path: Path
) -> None:
    """The worker starts while node 1 is down, answers, and goes on answering while each
    node in turn is killed -9 and brought back (two of three always up: R3 streams keep
    their quorum)."""
    cluster.nodes[0].kill()
    settings = cluster_settings(cluster.urls, tmp_path)
    proc = WorkerProcess(
        "llm",
        settings,
        # LLM_NICE=0: beside a CPU hog (ops/stress.sh) a niced llm gets a tenth of a core;
        # what is checked here is failover, not priority.
        env={
            "LLM_MAX_TOKENS": "16",
            "LLM_THREADS": "1",
            "LLM_MEMORY_WAIT_S": "0",
            "LLM_NICE": "0",
        },
        log_file=tmp_path / "llm.log",
    ).start()
    try:
        await proc.wait_consumer(cbus, timeout=90)
        answered = []
        for down in (None, 1, 2):
            if down is not None:
                cluster.nodes[down - 1].start()
                # Two of three up means the restarted node has caught up, not just started.
                await wait_in_sync(cbus, ["llm"])
                cluster.nodes[down].kill()
            t = transcript("What is the capital of France?")
            await cbus.publish(t)
            done = await reply_done(cbus, t, timeout=60)
            assert done.finish_reason in ("stop", "length") and done.tokens > 0
            answered.append(done)
            assert proc.running, f"llm exited; see {proc.log_file}"
        assert len(answered) == 3
    finally:
        proc.stop()
    log = (tmp_path / "llm.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


async def test_just_nats_cluster_3_starts_nodes_with_the_role_accounts_and_stops_them(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from workers.runtime.natsd import is_listening as listening

    base = free_cluster_ports(3)[0]
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "NATS_URL": f"nats://127.0.0.1:{base}",
        "NATS_SYNC_INTERVAL": "always",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 (a server in the background, not awaited)
        [sys.executable, "-m", "workers.runtime.natsd", "--cluster", "3"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = next(x.split("=", 1)[1].strip() for x in lines if "NATS_URL=" in x)
        urls = url.split(",")
        assert urls == [f"nats://127.0.0.1:{base + i}" for i in range(3)]
        settings = Settings(
            nats_url=url, stream_replicas=3, data_dir=tmp_path / "data", _env_file=None
        )  # type: ignore[call-arg]
        bus = await Bus.connect(settings, name="test")  # the operator's generated password
        try:
            await ensure_streams(bus)
            info = await bus.js.stream_info(bus.stream)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        finally:
            await bus.close()
        wrong = Settings(nats_url=url, nats_user="cli", nats_password="wrong", _env_file=None)  # type: ignore[call-arg]
        with pytest.raises(BusError, match=r"refused|credentials"):
            await Bus.connect(wrong, name="test")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert not any(listening(u) for u in urls)  # every node stopped with it
