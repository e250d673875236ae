"""Surge: ``--connections`` handshakes at ``--rate`` (0: as fast as the load generators can),
split over ``--clients`` processes on 127.0.0.2, .3, ...; they stay open for the scenarios
after it. Figures: success, handshakes/s, latency, errors by kind, how busy the clients'
cores were, and server CPU per handshake."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import processes
from benchmarks.load import generators
from benchmarks.load.generators import Usage
from benchmarks.load.targets import Placement, Target
from benchmarks.report import MIN_CPU_S, per, summary

PROGRESS_EVERY_S = 0.5


@dataclass
class Opened:
    """The surge's connections, held by ``processes`` for the scenarios after it."""

    processes: list[asyncio.subprocess.Process]
    connected: list[dict[str, Any]]  # each generator's 'connected' report
    progress: dict[int, int]
    before: Usage  # the servers' readings before the surge
    after: Usage  # ... and at its end
    cores_busy: dict[str, float | None]  # "clients"/"servers": whole cores, every process
    seconds: float
    client_cores_busy: float

    @property
    def count(self) -> int:
        return sum(r["opened"] for r in self.connected)


async def open_surge(target: Target, args: argparse.Namespace, placement: Placement) -> Opened:
    """Open the surge's connections (the caller closes ``Opened.processes``)."""
    before = generators.usage(target.processes)
    cores = {"clients": placement.clients, "servers": placement.servers}
    core_clock = {side: generators.core_times(c) for side, c in cores.items()}
    progress: dict[int, int] = {}
    started = time.monotonic()

    async def sample() -> None:
        while True:  # cancelled when the surge ends
            target.timeline.append((time.monotonic() - started, sum(progress.values())))
            line = f"\r  {target.name:<12} {sum(progress.values()):>7} / {args.connections} open"
            sys.stderr.write(line)
            sys.stderr.flush()
            await asyncio.sleep(PROGRESS_EVERY_S)

    sampler = asyncio.create_task(sample())
    try:
        held, connected = await generators.open_connections(
            target, args.connections, args.rate, args, placement, progress, "p"
        )
    finally:
        sampler.cancel()
        sys.stderr.write("\n")
    seconds = time.monotonic() - started
    after = generators.usage(target.processes)
    cores_busy = {
        side: generators.core_busy(core_clock[side], generators.core_times(c))
        for side, c in cores.items()
    }
    # how busy the load generators' cores were: near 100 %, latencies include the
    # clients' own queueing, and hs/s is the clients' limit, not the server's
    busy = sum(r["cpu_s"] for r in connected) / (
        max(r["seconds"] for r in connected) * placement.client_cores
    )
    return Opened(held, connected, progress, before, after, cores_busy, seconds, busy)


def figures(
    opened: Opened, held: Usage, args: argparse.Namespace, server_cores: int
) -> dict[str, Any]:
    """The surge's figures. ``cpu_s`` by process is read after the hold (idle but for
    heartbeats: the capacity model's input); ``server_cpu_s`` is the surge's alone."""
    count = opened.count
    cpu = {r: round(held[r][1] - opened.before[r][1], 3) for r in held}
    surge_cpu = generators.cpu_spent(opened.after, opened.before)
    clients_s = max(r["seconds"] for r in opened.connected)  # first handshake to last
    return {
        "requested": args.connections,
        "rate_per_s": args.rate,
        "seconds": opened.seconds,
        "success": count / args.connections,
        "handshakes_per_s": count / opened.seconds,
        "latency_s": summary([t for r in opened.connected for t in r["handshake_s"]]),
        "client_cores_busy": opened.client_cores_busy,
        "errors": generators.errors(opened.connected),
        "cpu_s": cpu,
        "handshakes_per_cpu_s": {r: per(count, c, MIN_CPU_S) for r, c in cpu.items()},
        # the clock above starts before the load generators do: their start-up is in it
        "client_start_s": opened.seconds - clients_s,
        "handshakes_per_s_after_start": per(count, clients_s),
        "cores_busy_all_processes": opened.cores_busy,
        "server_cpu_s": surge_cpu,
        "server_cores_busy": surge_cpu / (opened.seconds * server_cores),
        "server_cpu_ms_per_handshake": per(surge_cpu * 1000, count, 1),
    }


def client_affinity(opened: Opened) -> list[list[int]]:
    return [processes.affinity(g.pid) for g in opened.processes]
