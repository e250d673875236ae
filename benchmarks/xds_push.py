"""How fast a membership change reaches every Envoy, and what a push costs the server.

Runs the real xDS server (a child process) on an embedded Redis with a pool of
``--endpoints`` registered pods, connects ``--clients`` simulated Envoys (SotW,
then Delta) that subscribe to CDS, EDS, LDS and RDS and ACK every response, then
makes ``--changes`` membership changes (a pod joins, then leaves) and measures,
per change: time until the first and the last client holds the new EDS version,
and the server's CPU seconds spent (build + serialize + send + ACKs).

Then, with ``--zones`` > 1 (the pods are spread over that many zones), one zone is
lost: its pods die at once without a word (their registrations stop being renewed, as
when a zone's machines lose power) and the benchmark measures the time from their death
to every client holding an EDS version without them: the registration TTL
(``--zone-ttl``, what a real pod renews every few seconds), then the control plane's
presence check, then the push.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.ads_client import SimulatedEnvoy
from benchmarks.report import ms, publish, summary, table
from wsfleet.admin_token import ensure_admin_token, read_admin_token
from wsfleet.arg_types import positive_float, positive_int
from wsfleet.readiness import read_ready
from wsfleet.registry import PodRecord
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet_tools.launcher.children import Child, Supervisor
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis
from wsfleet_tools.launcher.ports import free_port

START_TIMEOUT_S = 30.0
ACK_SETTLE_S = 0.5  # after the last client has the new version: let the ACKs land


async def _start_xds(
    supervisor: Supervisor, redis_url: str, token_file: Path, run_dir: Path
) -> tuple[Child, int, int]:
    ready = run_dir / "xds.ready.json"
    child = await supervisor.start(
        "xds",
        [
            sys.executable,
            "-m",
            "wsfleet_tools",
            "--log-level",
            "warning",
            "xds",
            "--redis-url",
            redis_url,
            "--grpc-port",
            "0",
            "--admin-port",
            "0",
            "--admin-token-file",
            str(token_file),
            "--ready-file",
            str(ready),
        ],
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while (facts := read_ready(ready)) is None:
        if not child.running:
            raise RuntimeError(f"the xDS server exited at start:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the xDS server did not write {ready.name} within {START_TIMEOUT_S:g} s:\n"
                f"{child.tail()}"
            )
        await asyncio.sleep(0.05)
    return child, int(facts["grpc_port"]), int(facts["admin_port"])


async def _wait_membership(
    admin_port: int, token: str, endpoints: int, child: Child, timeout_s: float
) -> None:
    """Until the control plane's ``/debug/membership`` (behind the admin token) lists
    every registered pod."""
    url = f"http://127.0.0.1:{admin_port}/debug/membership"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout_s
    seen, last = 0, "no answer yet"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if not child.running:
                raise RuntimeError(f"the xDS server exited:\n{child.tail()}")
            try:
                async with session.get(url, headers=headers) as response:
                    if response.status != 200:
                        # a refusal (401/403) will not go away by asking again
                        raise RuntimeError(
                            f"GET /debug/membership answered {response.status}:"
                            f" {await response.text()}"
                        )
                    membership = await response.json()
                seen = len(membership.get("gateways", []))
                if seen >= endpoints:
                    return
                last = f"{seen} of {endpoints} pods listed"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
    raise TimeoutError(
        f"the xDS server did not list all {endpoints} registered pods in /debug/membership"
        f" within {timeout_s:g} s (last: {last})"
    )


async def _wait_all_new(
    clients: list[SimulatedEnvoy], before: list[str], t0: float, timeout_s: float
) -> list[float]:
    deadline = time.monotonic() + timeout_s
    missing = len(clients)
    while time.monotonic() < deadline:
        arrivals = []
        for client, old in zip(clients, before, strict=True):
            new = [at for at, version in client.eds_versions if version != old and at >= t0]
            if not new:
                break
            arrivals.append(new[0] - t0)
        else:
            return arrivals
        missing = len(clients) - len(arrivals)
        await asyncio.sleep(0.002)
    raise TimeoutError(
        f"at least {missing} of {len(clients)} simulated Envoys did not get the new EDS"
        f" version within {timeout_s:g} s of the membership change"
    )


async def _stop_clients(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stop.set()
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=10)
    if pending:
        sys.stderr.write(f"{len(pending)} simulated Envoys did not stop within 10 s\n")


async def scenario(protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    clients, endpoints, changes, zones = args.clients, args.endpoints, args.changes, args.zones
    with tempfile.TemporaryDirectory(prefix="wsfleet-bench-") as tmp:
        run_dir = Path(tmp)
        supervisor = Supervisor(run_dir / "logs")
        registry: RedisRegistry | None = None
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            _, redis_url = await start_embedded_redis(supervisor, free_port(), run_dir / "redis")
            registry = RedisRegistry(redis_url)
            pods = [
                PodRecord(
                    f"pod-{n:05d}", "gateways", "127.0.0.1", 20_000 + n, 1, zone=f"zone-{n % zones}"
                )
                for n in range(endpoints)
            ]
            for pod in pods:
                await registry.put_pod(pod, ttl_s=3600)
            token_file = ensure_admin_token(run_dir / "state")
            token = read_admin_token(token_file)
            assert token is not None
            child, grpc_port, admin_port = await _start_xds(
                supervisor, redis_url, token_file, run_dir
            )
            server = psutil.Process(child.pid)
            await _wait_membership(admin_port, token, endpoints, child, args.max_seconds)

            envoys = [
                SimulatedEnvoy(f"bench-{n}", f"127.0.0.1:{grpc_port}", delta=protocol == "delta")
                for n in range(clients)
            ]
            tasks = [asyncio.create_task(envoy.run(stop)) for envoy in envoys]
            connect_started = time.monotonic()
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(e.ready.wait() for e in envoys)), args.max_seconds
                )
            except TimeoutError:
                synced = sum(e.ready.is_set() for e in envoys)
                raise TimeoutError(
                    f"only {synced} of {clients} simulated Envoys ({protocol}) got CDS, EDS, LDS"
                    f" and RDS within {args.max_seconds:g} s"
                ) from None
            initial_sync_s = time.monotonic() - connect_started
            await asyncio.sleep(args.settle)

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
                arrivals = await _wait_all_new(envoys, before, t0, args.change_timeout)
                await asyncio.sleep(ACK_SETTLE_S)  # let the ACKs land before reading the CPU
                cpu.append(sum(server.cpu_times()[:2]) - cpu_before)
                first.append(min(arrivals))
                last.append(max(arrivals))
            zone_loss = None
            if zones > 1:
                zone_loss = await _lose_zone(registry, envoys, pods, args)
            rss_mb = server.memory_info().rss / 2**20
        finally:
            try:
                await _stop_clients(tasks, stop)
                if registry is not None:
                    await asyncio.wait_for(registry.close(), 10)
            finally:
                await supervisor.stop_all(5.0)  # the xDS server and Redis, on every way out
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
        "zone_loss": zone_loss,
    }


async def _lose_zone(
    registry: RedisRegistry,
    envoys: list[SimulatedEnvoy],
    pods: list[PodRecord],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The pods of ``zone-0`` renew their registration one last time with the short TTL,
    then die: the time from that death to every client having an EDS version without
    them."""
    lost = [pod for pod in pods if pod.zone == "zone-0"]
    before = [envoy.eds_versions[-1][1] for envoy in envoys]
    died_at = time.monotonic()  # each dies at its last renewal, none before this
    for pod in lost:  # the last renewals: the same content, so no push of their own
        await registry.put_pod(pod, ttl_s=args.zone_ttl)
    arrivals = await _wait_all_new(envoys, before, died_at, args.zone_ttl + args.change_timeout)
    return {
        "zones": args.zones,
        "pods_lost": len(lost),
        "registration_ttl_s": args.zone_ttl,
        "death_to_first_client_s": min(arrivals),
        "death_to_all_clients_s": max(arrivals),
        "after_expiry_to_all_clients_s": max(arrivals) - args.zone_ttl,
    }


async def main(args: argparse.Namespace) -> None:
    results = []
    for protocol in args.protocols:
        results.append(await scenario(protocol, args))
    rows = [
        (
            r["protocol"],
            r["clients"],
            r["endpoints"],
            r["initial_sync_s"],
            ms(r["change_to_first_client_s"]["p50"]),
            ms(r["change_to_all_clients_s"]["p50"]),
            ms(r["change_to_all_clients_s"]["max"]),
            ms(r["server_cpu_per_push_s"]["mean"]),
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
    losses = [(r["protocol"], r["zone_loss"]) for r in results if r["zone_loss"]]
    if losses:
        readable += "\n\n" + table(
            [
                (
                    protocol,
                    loss["pods_lost"],
                    loss["zones"],
                    loss["registration_ttl_s"],
                    ms(loss["death_to_first_client_s"]),
                    ms(loss["death_to_all_clients_s"]),
                    ms(loss["after_expiry_to_all_clients_s"]),
                )
                for protocol, loss in losses
            ],
            [
                "zone lost",
                "pods",
                "of zones",
                "TTL s",
                "death -> first ms",
                "death -> all ms",
                "expiry -> all ms",
            ],
        )
    publish("xds_push", {"scenarios": results}, readable, args.output_dir)


SMOKE: dict[str, Any] = {
    "clients": 10,
    "endpoints": 20,
    "changes": 2,
    "settle": 0.2,
    "zones": 2,
    "zone_ttl": 0.5,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=positive_int, default=200, help="simulated Envoys")
    parser.add_argument("--endpoints", type=positive_int, default=1000, help="registered pods")
    parser.add_argument(
        "--changes", type=positive_int, default=10, help="membership changes (join, leave, ...)"
    )
    parser.add_argument(
        "--protocols", nargs="+", default=["sotw", "delta"], choices=["sotw", "delta"]
    )
    parser.add_argument(
        "--settle", type=positive_float, default=1.0, help="seconds after the initial sync"
    )
    parser.add_argument(
        "--zones",
        type=positive_int,
        default=3,
        help="zones the pods are spread over; above 1, one of them is lost at the end",
    )
    parser.add_argument(
        "--zone-ttl",
        type=positive_float,
        default=3.0,
        help="the lost zone's registration TTL: how long its dead pods stay registered",
    )
    parser.add_argument(
        "--change-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a change may take to reach every client (a bound, not an expectation)",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=120.0,
        help="a bound on start-up waits (membership listed, initial sync)",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    del args
    return None
