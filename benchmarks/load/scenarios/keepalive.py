"""Keep-alive: ``--keepalive-held`` fresh connections, ``--keepalive-rate`` echo messages/s
spread round-robin over them for ``--keepalive-seconds``, and meanwhile WebSocket pings (a
client ping frame -> the server's pong frame) to one connection after another at
``--keepalive-ping-rate``: ping RTT, echo RTT, echo/s achieved, server cores busy."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.load import generators
from benchmarks.load.targets import Placement, Target
from benchmarks.report import per, summary

PING_PROBE = (
    "WebSocket ping frame from the client -> pong frame (answered by the sidecar, through"
    " Envoy, for wsfleet; by the bare aiohttp server, through Envoy or not, for the peers)"
)
MESSAGE_BYTES = 64


async def run(target: Target, args: argparse.Namespace, placement: Placement) -> dict[str, Any]:
    """``--keepalive-held`` connections, ``--keepalive-rate`` echo msg/s spread over them
    for ``--keepalive-seconds``, and the WebSocket ping RTT meanwhile."""
    figures: dict[str, Any] = {
        "held_requested": args.keepalive_held,
        "rate_per_s": args.keepalive_rate,
        "seconds": args.keepalive_seconds,
        "ping_probe": PING_PROBE,
    }
    if not args.keepalive_held:
        return figures
    await asyncio.sleep(args.settle)  # the closed connections of the phase before are gone
    progress: dict[int, int] = {}
    held, connected = await generators.open_connections(
        target, args.keepalive_held, args.rate, args, placement, progress, "k"
    )
    try:
        before = generators.usage(target.processes)
        for g in held:
            await generators.send(
                g,
                cmd="keepalive",
                rate=args.keepalive_rate / len(held),
                seconds=args.keepalive_seconds,
                ping_per_second=args.keepalive_ping_rate / len(held),
                size=MESSAGE_BYTES,
            )
        results = await asyncio.gather(
            *(
                generators.read_event(g, "keepalive", progress, i, args.keepalive_seconds + 60)
                for i, g in enumerate(held)
            )
        )
        after = generators.usage(target.processes)
    finally:
        await generators.close(held)
    seconds = max(r["seconds"] for r in results)
    cpu = generators.cpu_spent(after, before)
    received = sum(r["echo_received"] for r in results)
    figures.update(
        {
            "held": sum(r["opened"] for r in connected),
            "connect_errors": generators.errors(connected),
            "open_at_end": sum(r["open"] for r in results),
            "ping_rtt_s": summary([t for r in results for t in r["ping_rtt_s"]]),
            "pings_lost": sum(r["pings_lost"] for r in results),
            "echo_rtt_s": summary([t for r in results for t in r["echo_rtt_s"]]),
            "echo_sent": sum(r["echo_sent"] for r in results),
            "echo_received": received,
            "echo_send_errors": sum(r["send_errors"] for r in results),
            "echo_per_s": per(received, seconds),
            "measured_s": seconds,
            "server_cpu_s": cpu,
            "server_cores_busy": per(cpu, seconds),
        }
    )
    return figures
