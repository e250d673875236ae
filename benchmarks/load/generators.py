"""The load generators (benchmarks/loadgen.py, one process per ``--clients`` share) as seen
from the benchmark: start them, read their JSON lines, send them commands, stop them; and
the server processes' memory and CPU read around each phase."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import psutil

from benchmarks import processes
from benchmarks.load.targets import Placement, Target

Usage = dict[str, tuple[float, float]]  # role -> (RSS MB, CPU seconds)
IN_FLIGHT = 200  # handshakes in flight per load generator at most (loadgen.py's --concurrency)


async def spawn(
    target: Target,
    count: int,
    rate: float,
    index: int,
    *,
    cores: frozenset[int] | None = None,
    prefix: str = "p",
    max_seconds: float = 300.0,
    module: str = "benchmarks.loadgen",
) -> asyncio.subprocess.Process:
    """A load generator holding ``count`` connections to ``target`` (see loadgen.py; the
    scale benchmark's ``module`` is benchmarks/scale_client.py, which speaks the same)."""
    argv = [
        sys.executable,
        "-m",
        module,
        "--url",
        target.url,
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--source-ip",
        f"127.0.0.{2 + index}",
        "--prefix",
        f"{prefix}{index}",
        "--deadline-s",
        str(max_seconds),
        "--handshake-timeout",
        str(min(30.0, max_seconds)),
        "--idle-s",
        str(4 * max_seconds + 60),
    ]
    argv += ["--key-file", str(target.key_file)]
    if target.v1:  # protocol v1, as the SDKs speak it
        argv.append("--v1")
    return await processes.spawn(*argv, cores=cores)


async def read_event(
    process: asyncio.subprocess.Process,
    event: str,
    progress: dict[int, int],
    index: int,
    timeout_s: float,
    who: str = "load generator",
) -> dict[str, Any]:
    """The next ``event`` line of a load generator (progress lines are counted on the way)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = await asyncio.wait_for(process.stdout.readline(), remaining)
        except TimeoutError:
            break
        if not line:
            raise RuntimeError(
                f"{who} {index} exited (code {await process.wait()}) before '{event}'"
            )
        message: dict[str, Any] = json.loads(line)
        if message["event"] == "progress":
            progress[index] = message["open"]
            continue
        if message["event"] == event:
            return message
    raise TimeoutError(f"{who} {index} did not report '{event}' within {timeout_s:g} s")


async def send(process: asyncio.subprocess.Process, **command: Any) -> None:
    assert process.stdin is not None
    process.stdin.write((json.dumps(command) + "\n").encode())
    await asyncio.wait_for(process.stdin.drain(), 10)


async def close(generators: list[asyncio.subprocess.Process]) -> None:
    """Ask each load generator to close its connections and exit; kill it after a bound."""
    for g in generators:
        if g.returncode is None:
            try:
                await send(g, cmd="close")
            except (ConnectionError, TimeoutError):
                g.kill()
    await asyncio.gather(*(processes.finish(g, 30) for g in generators))


def usage(roles: dict[str, psutil.Process]) -> Usage:
    """role -> (RSS MB, CPU seconds)"""
    readings = {}
    for role, process in roles.items():
        try:
            cpu = process.cpu_times()
            readings[role] = (process.memory_info().rss / 2**20, cpu.user + cpu.system)
        except psutil.NoSuchProcess:
            readings[role] = (0.0, 0.0)
    return readings


def core_times(cores: frozenset[int] | None) -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of ``cores`` (None: all) so far, every process on them:
    with other work on the machine, a core can be saturated while ours use little of it."""
    per_core = psutil.cpu_times(percpu=True)
    chosen = [per_core[c] for c in sorted(cores)] if cores else per_core
    elapsed = sum(sum(t) for t in chosen)
    return elapsed - sum(t.idle + getattr(t, "iowait", 0.0) for t in chosen), elapsed


def core_busy(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """The share of the time ``cores`` were busy between two :func:`core_times` readings."""
    elapsed = after[1] - before[1]
    return (after[0] - before[0]) / elapsed if elapsed > 0 else None


def cpu_spent(after: Usage, before: Usage) -> float:
    """CPU seconds spent between two readings, all roles (to the ms: readings are ticks)."""
    return round(sum(after[role][1] - before[role][1] for role in after), 3)


def cpu_by_role(after: Usage, before: Usage, per: int, scale: float) -> dict[str, float]:
    """Each role's CPU between two readings, times ``scale`` per ``per`` units of work (ms
    per handshake: 1000; µs per message: 1e6); roles that spent nothing are left out."""
    spent = {role: after[role][1] - before[role][1] for role in after if role in before}
    return {
        role: round(cpu * scale / per, 1 if scale > 1000 else 3)
        for role, cpu in sorted(spent.items(), key=lambda item: -item[1])
        if cpu > 0 and per > 0
    }


def shares(total: int, parts: int) -> list[int]:
    """``total`` split over at most ``parts`` processes (none empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def open_connections(
    target: Target,
    total: int,
    rate: float,
    args: argparse.Namespace,
    placement: Placement,
    progress: dict[int, int],
    prefix: str,
) -> tuple[list[asyncio.subprocess.Process], list[dict[str, Any]]]:
    """Start the load generators and wait until each has made its connections."""
    parts = shares(total, args.clients)
    generators: list[asyncio.subprocess.Process] = []
    try:
        for i, share in enumerate(parts):
            generators.append(
                await spawn(
                    target,
                    share,
                    rate / len(parts),
                    i,
                    cores=placement.clients,
                    prefix=prefix,
                    max_seconds=args.max_seconds,
                )
            )
        connected = await asyncio.gather(
            *(
                read_event(g, "connected", progress, i, args.max_seconds + 30)
                for i, g in enumerate(generators)
            )
        )
    except BaseException:
        await close(generators)
        raise
    for i, result in enumerate(connected):
        progress[i] = result["opened"]
    return generators, connected


def in_flight(total: int, parts: int) -> int:
    """The most handshakes the load generators have in flight at once."""
    return sum(min(IN_FLIGHT, share) for share in shares(total, parts))


def errors(results: list[dict[str, Any]]) -> dict[str, int]:
    """Handshake errors by kind, summed over the load generators."""
    by_kind: dict[str, int] = {}
    for result in results:
        for kind, n in result["errors"].items():
            by_kind[kind] = by_kind.get(kind, 0) + n
    return by_kind
