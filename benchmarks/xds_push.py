"""How fast a membership change reaches every Envoy, and what a push costs the server.

Runs the real xDS server (a child process) on an embedded Redis with a pool of
``--endpoints`` registered pods, connects ``--clients`` simulated Envoys (SotW,
then Delta) that subscribe to CDS, EDS, LDS and RDS and ACK every response, then
makes ``--changes`` membership changes (a pod joins, then leaves) and measures,
per change: time until the first and the last client holds the new EDS version,
and the server's CPU seconds spent (build + serialize + send + ACKs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.ads_client import SimulatedEnvoy
from benchmarks.report import publish, summary, table
from wsfleet.launcher.children import Supervisor
from wsfleet.launcher.embedded_redis import start_embedded_redis
from wsfleet.launcher.ports import free_port
from wsfleet.readiness import read_ready
from wsfleet.registry import PodRecord
from wsfleet.registry.redis_registry import RedisRegistry

DEADLINE_S = 30.0  # per change: a bound, not an expectation


async def _start_xds(
    supervisor: Supervisor, redis_url: str, run_dir: Path
) -> tuple[psutil.Process, int, int]:
    ready = run_dir / "xds.ready.json"
    child = await supervisor.start(
        "xds",
        [
            sys.executable,
            "-m",
            "wsfleet",
            "--log-level",
            "warning",
            "xds",
            "--redis-url",
            redis_url,
            "--grpc-port",
            "0",
            "--admin-port",
            "0",
            "--ready-file",
            str(ready),
        ],
    )
    deadline = time.monotonic() + 30
    while (facts := read_ready(ready)) is None:
        if time.monotonic() > deadline or not child.running:
            raise RuntimeError(f"xds server did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    return psutil.Process(child.pid), int(facts["grpc_port"]), int(facts["admin_port"])


async def _endpoint_count(admin_port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin_port}/debug/membership") as response,
    ):
        membership = await response.json()
    return len(membership.get("gateways", []))


async def _wait_all_new(clients: list[SimulatedEnvoy], before: list[str], t0: float) -> list[float]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        arrivals = []
        for client, old in zip(clients, before, strict=True):
            new = [at for at, version in client.eds_versions if version != old and at >= t0]
            if not new:
                break
            arrivals.append(new[0] - t0)
        else:
            return arrivals
        await asyncio.sleep(0.002)
    raise TimeoutError("not every client got the new EDS version in time")


async def scenario(protocol: str, clients: int, endpoints: int, changes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wsfleet-bench-") as tmp:
        run_dir = Path(tmp)
        supervisor = Supervisor(run_dir / "logs")
        try:
            _, redis_url = await start_embedded_redis(supervisor, free_port(), run_dir / "redis")
            registry = RedisRegistry(redis_url)
            for n in range(endpoints):
                pod = PodRecord(f"pod-{n:05d}", "gateways", "127.0.0.1", 20_000 + n, 1)
                await registry.put_pod(pod, ttl_s=3600)
            server, grpc_port, admin_port = await _start_xds(supervisor, redis_url, run_dir)
            while await _endpoint_count(admin_port) < endpoints:  # noqa: ASYNC110 (remote state)
                await asyncio.sleep(0.1)

            stop = asyncio.Event()
            envoys = [
                SimulatedEnvoy(f"bench-{n}", f"127.0.0.1:{grpc_port}", delta=protocol == "delta")
                for n in range(clients)
            ]
            tasks = [asyncio.create_task(envoy.run(stop)) for envoy in envoys]
            connect_started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(e.ready.wait() for e in envoys)), 120)
            initial_sync_s = time.monotonic() - connect_started
            await asyncio.sleep(1.0)

            last, first, cpu = [], [], []
            for change in range(changes):
                before = [envoy.eds_versions[-1][1] for envoy in envoys]
                cpu_before = sum(server.cpu_times()[:2])
                t0 = time.monotonic()
                extra = PodRecord("pod-extra", "gateways", "127.0.0.1", 19_999, 1)
                if change % 2 == 0:
                    await registry.put_pod(extra, ttl_s=3600)
                else:
                    await registry.remove_pod("pod-extra")
                arrivals = await _wait_all_new(envoys, before, t0)
                await asyncio.sleep(0.5)  # let the ACKs land before reading the CPU clock
                cpu.append(sum(server.cpu_times()[:2]) - cpu_before)
                first.append(min(arrivals))
                last.append(max(arrivals))
            rss_mb = server.memory_info().rss / 2**20
            stop.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await registry.close()
        finally:
            await supervisor.stop_all(5.0)
    return {
        "protocol": protocol,
        "clients": clients,
        "endpoints": endpoints,
        "changes": changes,
        "initial_sync_s": initial_sync_s,
        "change_to_first_client_s": summary(first),
        "change_to_all_clients_s": summary(last),
        "server_cpu_per_push_s": summary(cpu),
        "server_rss_mb": rss_mb,
    }


async def main(args: argparse.Namespace) -> None:
    results = []
    for protocol in args.protocols:
        results.append(await scenario(protocol, args.clients, args.endpoints, args.changes))
    rows = [
        (
            r["protocol"],
            r["clients"],
            r["endpoints"],
            r["initial_sync_s"],
            r["change_to_first_client_s"]["p50"] * 1000,
            r["change_to_all_clients_s"]["p50"] * 1000,
            r["change_to_all_clients_s"]["max"] * 1000,
            r["server_cpu_per_push_s"]["mean"] * 1000,
            r["server_rss_mb"],
        )
        for r in results
    ]
    readable = table(
        rows,
        [
            "protocol",
            "clients",
            "endpoints",
            "initial sync s",
            "first ms p50",
            "all ms p50",
            "all ms max",
            "server CPU ms/push",
            "server RSS MB",
        ],
    )
    publish("xds_push", {"scenarios": results}, readable)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument(
        "--protocols", nargs="+", default=["sotw", "delta"], choices=["sotw", "delta"]
    )
