"""One target, every scenario in order: the surge opens the connections that sustained,
echo latency, throughput and fan-out use; keep-alive opens its own; the outside client
(``--client picows``) comes last, with its own. One result row."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.load import generators
from benchmarks.load.scenarios import (
    echo_latency,
    fanout,
    keepalive,
    outside,
    surge,
    sustained,
    throughput,
)
from benchmarks.load.targets import Placement, Target


async def measure(
    target: Target, args: argparse.Namespace, placement: Placement, index: int
) -> dict[str, Any]:
    """Every scenario against ``target``, the ``index``-th of the run (its outside surge
    comes from an address of its own: :func:`outside.source_ip`)."""
    await asyncio.sleep(args.settle)  # let start-up work (registration, xDS) finish
    opened = await surge.open_surge(target, args, placement)
    try:
        loadgen_affinity = surge.client_affinity(opened)
        held = await sustained.hold(target, args.hold)
        latency = await echo_latency.run(opened, args)
        messages = await throughput.run(target, opened, held, args)
        broadcast = await fanout.run(target, opened, args)
    finally:
        await generators.close(opened.processes)
    row: dict[str, Any] = {
        "target": target.name,
        "protocol": "v1" if target.v1 else "raw",
        "connections": opened.count,
        "affinity": {"servers": target.affinity(), "load_generators": loadgen_affinity},
        "surge": surge.figures(opened, held, args, placement.server_cores),
        "sustained": sustained.figures(opened.before, held, opened.count, args),
        **latency,
        "throughput": messages,
        "fanout": broadcast,
        "timeline": target.timeline,
    }
    row["keepalive"] = await keepalive.run(target, args, placement)
    if args.client == "picows":
        row["outside"] = await outside.run(target, args, placement, outside.source_ip(index))
    return row
