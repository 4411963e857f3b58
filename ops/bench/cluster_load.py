"""`just bench load N ... --cluster 3`: the same load on one server and on a 3-node cluster.

Both run in this one invocation, each on a fresh store: first a single embedded server
(R1 streams), then a loopback cluster (R3 streams) whose VOICE stream leader is killed -9
a few seconds into a level (mid-turn) and restarted a few seconds later: the levels run
once undisturbed (for throughput, voice-to-voice and recorder lag against the single
server) and once more with the kill. The pause a
failover causes is the time from the kill until the stream answers again under a new
leader. Every turn must still end and the log audit must stay clean (the levels' problems).
The nodes share this machine's cores with the workers: the cluster pays three servers'
replication work on the same 2 cores, which a real cluster spreads over machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from typing import Any

import nats.errors
import nats.js.errors

from ops.bench.load import print_table, run
from workers.cli.pipeline import Pipeline, progress
from workers.runtime.config import Settings, get_settings
from workers.runtime.natscluster import NatsCluster, free_cluster_ports, wait_jetstream
from workers.runtime.natsd import NatsServer, auth_config, free_port

#: Seconds into a level when the stream leader is killed (the question is being spoken or
#: answered), and how long it stays down.
KILL_AFTER_S = 3.0
DOWN_FOR_S = 4.0


def with_nats(settings: Settings, url: str, replicas: int) -> Settings:
    data = settings.model_dump()
    data.update(nats_url=url, stream_replicas=replicas)
    return type(settings)(_env_file=None, **data)  # type: ignore[call-arg]


def leader_killer(cluster: NatsCluster, skip: int):  # type: ignore[no-untyped-def]
    """Kills the stream leader in every level after the first `skip` ones."""
    calls = [0]

    async def during(p: Pipeline, n: int) -> dict[str, Any] | None:
        assert p.bus is not None
        calls[0] += 1
        if calls[0] <= skip:
            return None
        await asyncio.sleep(KILL_AFTER_S)
        info = await p.bus.js.stream_info(p.bus.stream)
        leader = info.cluster.leader if info.cluster else None
        node = cluster.node_named(leader or "")
        t0 = time.monotonic()
        node.kill()
        pause = None
        # A short API timeout: the pause is measured to ~0.3 s, not to JetStream's default 5 s.
        js = p.bus.nc.jetstream(timeout=0.3)
        while time.monotonic() - t0 < 60:
            try:
                info = await js.stream_info(p.bus.stream)
                if info.cluster and info.cluster.leader and info.cluster.leader != leader:
                    pause = time.monotonic() - t0
                    break
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, DOWN_FOR_S - (time.monotonic() - t0)))
        await asyncio.to_thread(node.start)
        progress(
            f"  killed stream leader {leader}; new leader after "
            + (f"{pause * 1000:.0f} ms" if pause is not None else "NEVER")
        )
        return {"killed": leader, "failover_pause_ms": None if pause is None else pause * 1000}

    return during


def main_cluster(args: argparse.Namespace, levels: list[int]) -> int:
    settings = get_settings()
    work = settings.data_dir / "bench" / "cluster-vs-single"
    shutil.rmtree(work, ignore_errors=True)
    auth = auth_config(settings)
    t0 = time.monotonic()
    results: dict[str, list[dict]] = {}
    single = NatsServer(free_port(), work / "single", settings.nats_sync_interval, auth)
    try:
        single.start()
        progress(f"single server at {single.url}")
        results["single"] = asyncio.run(
            run(
                levels,
                args.fast,
                args.llm_threads,
                args.llm_parallel,
                with_nats(settings, single.url, 1),
            )
        )
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench load: error (single server): {exc}", file=sys.stderr)
        return 1
    finally:
        single.stop()
    cluster = NatsCluster(
        free_cluster_ports(args.cluster),
        work / "cluster",
        sync_interval=settings.nats_sync_interval,
        auth_config=auth,
        log_dir=work / "cluster",
    )
    try:
        cluster.start()
        asyncio.run(wait_jetstream(cluster.urls, settings.nats_user, settings.nats_password))
        progress(f"{args.cluster}-node cluster at {cluster.nats_url}")
        both = asyncio.run(
            run(
                levels + levels,
                args.fast,
                args.llm_threads,
                args.llm_parallel,
                with_nats(settings, cluster.nats_url, min(3, args.cluster)),
                during=leader_killer(cluster, skip=len(levels)),
            )
        )
        results["cluster"], results["cluster, leader killed"] = (
            both[: len(levels)],
            both[len(levels) :],
        )
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench load: error (cluster): {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    print(
        f"ran N in {levels} on one server, then on {args.cluster} nodes, in "
        f"{time.monotonic() - t0:.0f} s"
    )
    for name in results:
        print(f"\n== {name} ==")
        print_table(results[name])
    print_ratios(results["single"], results["cluster"], results["cluster, leader killed"])
    if args.json:
        print(json.dumps(results))
    return 0


def print_ratios(single: list[dict], cluster: list[dict], killed: list[dict]) -> None:
    print("\n== cluster / single ==")

    def row(label: str, f, other: list[dict] = cluster) -> None:  # type: ignore[no-untyped-def]
        cells = []
        for a, b in zip(single, other, strict=True):
            x, y = f(a), f(b)
            cells.append(f"{y / x:.2f}x" if x else "-")
        print(f"{label:34}" + "".join(f"{c:>12}" for c in cells))

    print(f"{'conversations at once (N)':34}" + "".join(f"{r['n']:>12}" for r in single))
    row("events/s through the bus", lambda r: r["bus_events_per_s"])
    row("events/s into the log", lambda r: r["log_events_per_s"])
    row("turns per wall second", lambda r: r["turns"] / r["wall_s"])
    row("voice-to-voice p50", lambda r: r["voice_to_voice_ms"]["p50"])
    row("voice-to-voice p95", lambda r: r["voice_to_voice_ms"]["p95"])
    row("recorder lag p50", lambda r: r["recorder_lag_ms"]["p50"])
    row("recorder lag p99", lambda r: r["recorder_lag_ms"]["p99"])
    row("v2v p50, leader killed mid-level", lambda r: r["voice_to_voice_ms"]["p50"], killed)
    pauses = [
        r["during"]["failover_pause_ms"]
        for r in killed
        if r.get("during") and r["during"]["failover_pause_ms"] is not None
    ]
    never = sum(1 for r in killed if r.get("during") and r["during"]["failover_pause_ms"] is None)
    if pauses:
        print(
            f"failover pause (leader killed -9 -> new leader answers): p50 "
            f"{statistics.median(pauses):.0f} ms, max {max(pauses):.0f} ms over {len(pauses)} "
            f"kill(s)" + (f"; {never} without a new leader in 60 s" if never else "")
        )
    ended = all(r["turns"] >= r["n"] for r in cluster + killed)
    problems = sum(len(r["problems"]) for r in cluster + killed)
    print(f"cluster: every turn ended: {'yes' if ended else 'NO'}; log problems: {problems}")
