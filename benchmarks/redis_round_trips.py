"""What a round trip costs Redis beside the script calls it carries.

One embedded Redis; the registry's touch script (one call per connection, as on a Redis
Cluster, where a call takes one slot's keys) is sent in pipelines of 1, 10, 100 and
1,000 calls, ``--calls`` calls in all per size. Redis's own CPU (``INFO cpu``) over each
size, fitted to ``per pipeline = round trip + size x per call``, gives the two costs the
capacity model needs: on a cluster every pod's every batch is a round trip to every
shard, whatever it carries.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks.report import publish, table
from wsfleet.arg_types import positive_float, positive_int
from wsfleet.registry.redis_registry import TOUCH_CONNECTIONS
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis
from wsfleet_tools.launcher.ports import free_port

SIZES = (1, 10, 100, 1000)


async def _redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _measure(client: aioredis.Redis, size: int, calls: int, deadline: float) -> float:
    """Redis CPU-seconds per pipeline of ``size`` touch calls."""
    loop = asyncio.get_running_loop()
    pipelines = max(1, calls // size)
    before = await _redis_cpu_s(client)
    sent = 0
    for n in range(pipelines):
        if loop.time() > deadline:
            break
        batch = [([f"c:{n}:{i}", f"u:{i}"], [60_000, n]) for i in range(size)]
        await TOUCH_CONNECTIONS.run(client, batch)
        sent += 1
    return (await _redis_cpu_s(client) - before) / max(1, sent)


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``cost = a + b * size``: (a, b)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - b * mean_x, b


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wsfleet-bench-rt-") as tmp:
        supervisor = Supervisor(Path(tmp) / "logs")
        try:
            _, url = await start_embedded_redis(supervisor, free_port(), Path(tmp) / "redis")
            client: aioredis.Redis = aioredis.Redis.from_url(url)
            try:
                await TOUCH_CONNECTIONS.run(client, [(["warm", "up"], [1000, 0])])
                deadline = asyncio.get_running_loop().time() + args.max_seconds
                points = [
                    (size, await _measure(client, size, args.calls, deadline)) for size in SIZES
                ]
            finally:
                await client.aclose()
        finally:
            await supervisor.stop_all(10.0)
    # the smallest pipelines weigh the round trip: fit it on them, the call on the largest
    round_trip_s, _ = _fit(points[:2])
    per_call_s = points[-1][1] / SIZES[-1]
    figures: dict[str, Any] = {
        "calls_per_size": args.calls,
        "per_pipeline_us": {str(size): cost * 1e6 for size, cost in points},
        "measured": {
            "redis_round_trip_us": max(0.0, round_trip_s * 1e6),
            "redis_touch_call_us": per_call_s * 1e6,
        },
    }
    readable = table(
        [(size, f"{cost * 1e6:.1f}", f"{cost / size * 1e6:.2f}") for size, cost in points],
        ["calls per pipeline", "Redis CPU per pipeline (us)", "per call (us)"],
    )
    readable += (
        f"\n\nround trip ~ {figures['measured']['redis_round_trip_us']:.1f} us of Redis CPU,"
        f" a touch call ~ {per_call_s * 1e6:.2f} us"
    )
    publish("redis_round_trips", figures, readable, args.output_dir)


SMOKE: dict[str, Any] = {"calls": 2000, "max_seconds": 60.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calls", type=positive_int, default=20_000, help="touch calls per pipeline size"
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on the whole run"
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.calls < SIZES[-1]:
        return f"--calls {args.calls}: at least {SIZES[-1]} (the largest pipeline)"
    return None
