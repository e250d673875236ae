"""Echo latency: one echo round trip on each held connection, one after another at
``--rtt-rate`` per second over all load generators, with every connection held."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.load import generators
from benchmarks.load.scenarios.surge import Opened
from benchmarks.report import summary

ECHO_PROBE = "one echo message -> its echo (through the backend for wsfleet)"


async def run(opened: Opened, args: argparse.Namespace) -> dict[str, Any]:
    for g in opened.processes:
        await generators.send(
            g,
            cmd="rtt",
            mode="echo",
            per_second=args.rtt_rate / len(opened.processes),
            max_seconds=args.max_seconds,
        )
    results = await asyncio.gather(
        *(
            generators.read_event(g, "rtt", opened.progress, i, args.max_seconds + 30)
            for i, g in enumerate(opened.processes)
        )
    )
    return {
        "echo_rtt_probe": ECHO_PROBE,
        "echo_rtt_s": summary([t for r in results for t in r["rtt_s"]]),
        "rtt_lost": sum(r["lost"] for r in results),
    }
