"""Fan-out: one held connection broadcasts ``--fanout`` messages (through the backend for
wsfleet); every held connection must get each. Deliveries/s and per server CPU-second."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.load import generators
from benchmarks.load.scenarios.surge import Opened
from benchmarks.load.targets import Target
from benchmarks.report import MIN_CPU_S, per


async def run(target: Target, opened: Opened, args: argparse.Namespace) -> dict[str, Any]:
    held, progress = opened.processes, opened.progress
    for g in held:
        await generators.send(g, cmd="fanout_reset")
    await asyncio.gather(
        *(
            generators.read_event(g, "fanout_ready", progress, i, args.max_seconds)
            for i, g in enumerate(held)
        )
    )
    before = generators.usage(target.processes)
    started = time.perf_counter()
    for i, g in enumerate(held):
        await generators.send(
            g, cmd="fanout", messages=args.fanout, send=i == 0, deadline_s=args.max_seconds
        )
    results = await asyncio.gather(
        *(
            generators.read_event(g, "fanout", progress, i, args.max_seconds + 30)
            for i, g in enumerate(held)
        )
    )
    after = generators.usage(target.processes)
    delivered = sum(r["received"] for r in results)
    seconds = max(r["last"] for r in results) - started if delivered else 0.0
    cpu = generators.cpu_spent(after, before)
    return {
        "broadcasts": args.fanout,
        "expected": args.fanout * opened.count,
        "delivered": delivered,
        "seconds": seconds,
        "deliveries_per_s": per(delivered, seconds),
        "server_cpu_s": cpu,
        "deliveries_per_cpu_s": per(delivered, cpu, MIN_CPU_S),
        "cpu_s": {r: round(after[r][1] - before[r][1], 3) for r in target.processes},
    }
