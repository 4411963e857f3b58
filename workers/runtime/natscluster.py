"""A cluster of the embedded nats-server on loopback (`just nats --cluster 3`).

Each node has its own client port, cluster (route) port and store folder, JetStream, the
same per-role accounts as the single server (workers.runtime.security) and a route password
so that nothing else on the machine can join the cluster. Streams replicated on 3 nodes
(STREAM_REPLICAS=3) survive the loss of any one node; clients take the whole list as
NATS_URL. For trying a cluster and for tests: a real cluster puts its nodes on separate
machines.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from workers.runtime.natsd import NatsServer, NatsServerError, free_port_block

CLUSTER_NAME = "voicebus"
#: A node's route port is its client port plus this.
ROUTE_PORT_OFFSET = 2000


def free_cluster_ports(size: int) -> list[int]:
    """Client ports for a loopback cluster of `size` nodes whose route ports (client port +
    ROUTE_PORT_OFFSET) are free too (tests and benchmarks; `free_port()` per node can pick a
    port that a node's own outgoing route connection then takes)."""
    base = free_port_block(size, (0, ROUTE_PORT_OFFSET))
    return [base + i for i in range(size)]


def cluster_block(name: str, route_port: int, peer_ports: list[int], secret: str) -> str:
    routes = ", ".join(f'"nats-route://route:{secret}@127.0.0.1:{p}"' for p in peer_ports)
    return (
        "cluster {\n"
        f"  name: {name}\n"
        f"  listen: 127.0.0.1:{route_port}\n"
        f'  authorization {{ user: route, password: "{secret}" }}\n'
        f"  routes: [{routes}]\n"
        "}\n"
    )


class NatsCluster:
    """N nodes of nats-server with JetStream, clustered over loopback routes."""

    def __init__(
        self,
        ports: list[int],
        store_dir: Path,
        *,
        route_ports: list[int] | None = None,
        sync_interval: str = "1s",
        auth_config: str = "",
        log_dir: Path | None = None,
    ) -> None:
        if len(ports) < 3:
            # JetStream's meta group needs a majority: with 2 nodes, losing one stops it.
            raise NatsServerError("a JetStream cluster needs at least 3 nodes")
        route_ports = route_ports or [p + ROUTE_PORT_OFFSET for p in ports]
        secret = secrets.token_urlsafe(24)
        self.nodes: list[NatsServer] = []
        for i, (port, rport) in enumerate(zip(ports, route_ports, strict=True)):
            peers = [p for p in route_ports if p != rport]
            self.nodes.append(
                NatsServer(
                    port,
                    Path(store_dir) / f"n{i + 1}",
                    sync_interval,
                    extra_config=auth_config + cluster_block(CLUSTER_NAME, rport, peers, secret),
                    log_file=(Path(log_dir) / f"n{i + 1}.log") if log_dir else None,
                    server_name=f"voicebus_n{i + 1}",
                )
            )

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def nats_url(self) -> str:
        """What NATS_URL should be for clients of this cluster."""
        return ",".join(self.urls)

    def start(self) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start()
        except NatsServerError:
            self.stop()
            raise
        return self

    def node_named(self, server_name: str) -> NatsServer:
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise KeyError(server_name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def wait_jetstream(
    urls: list[str], user: str | None = None, password: str | None = None, timeout: float = 30
) -> None:
    """Wait until the cluster's JetStream answers (its meta leader is elected: a few seconds
    after the nodes start)."""
    import nats
    import nats.errors
    import nats.js.errors

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    nc = await nats.connect(
        urls, user=user, password=password, connect_timeout=2, max_reconnect_attempts=-1
    )
    try:
        js = nc.jetstream(timeout=2)
        while time.monotonic() < deadline:
            try:
                await js.account_info()
                return
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
    finally:
        await nc.close()
    raise NatsServerError(f"the cluster's JetStream did not answer within {timeout}s: {last!r}")
