"""Throughput: every held connection sends ``--messages`` 64-byte echo messages and waits
for their echoes; messages/s, per server CPU-second (all processes and each), and the RSS
growth per message (Redis keeps each v1 message in the session's replay buffer)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.load import generators
from benchmarks.load.generators import Usage
from benchmarks.load.scenarios.surge import Opened
from benchmarks.load.targets import Target
from benchmarks.report import MIN_CPU_S, per

MESSAGE_BYTES = 64


async def run(
    target: Target, opened: Opened, held: Usage, args: argparse.Namespace
) -> dict[str, Any]:
    before = generators.usage(target.processes)
    for g in opened.processes:
        await generators.send(
            g,
            cmd="throughput",
            messages=args.messages,
            size=MESSAGE_BYTES,
            max_seconds=args.max_seconds,
        )
    results = await asyncio.gather(
        *(
            generators.read_event(g, "throughput", opened.progress, i, args.max_seconds + 30)
            for i, g in enumerate(opened.processes)
        )
    )
    after = generators.usage(target.processes)
    received = sum(t["received"] for t in results)
    seconds = max(t["seconds"] for t in results)
    server_cpu = generators.cpu_spent(after, before)
    by_role = {r: round(after[r][1] - before[r][1], 3) for r in target.processes}
    return {
        "messages": received,
        "seconds": seconds,
        "messages_per_s": per(received, seconds),
        "server_cpu_s": server_cpu,
        "messages_per_cpu_s": per(received, server_cpu, MIN_CPU_S),
        "cpu_s": by_role,
        "messages_per_cpu_s_by_process": {
            r: per(received, c, MIN_CPU_S) for r, c in by_role.items()
        },
        "rss_growth_bytes_per_message": {
            r: per((after[r][0] - held[r][0]) * 2**20, received, 1) for r in target.processes
        },
    }
