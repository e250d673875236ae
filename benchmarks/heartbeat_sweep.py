"""Heartbeat settings against loss and latency: false positives vs time to detect.

For each heartbeat setting (interval/timeout), a fleet with one sidecar so configured;
clients connect through the user-space fault proxy (no ``netem`` here), which is swept
over loss x latency; every cell holds ``--clients`` connections for ``--hold`` seconds and
counts the connections the gateway declared dead although the client answered every ping
it got (false positives). Then one connection is blackholed on a clean path and the
time until the gateway cuts it is measured. The defaults (15 s / 15 s) were chosen from
this table: dead sockets found within 30 s, no false positive at 5 % loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.report import publish, table
from wsfleet.arg_types import fraction, non_negative_float, positive_float, positive_int
from wsfleet_tools.chaos.faults import Faults
from wsfleet_tools.chaos.proxy import FaultProxy
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

REQUEST_TIMEOUT_S = 5.0  # an admin request, a handshake through the fault proxy
CLOSE_TIMEOUT_S = 2.0


async def _dead(session: aiohttp.ClientSession, admin_port: int) -> float:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    url = f"http://127.0.0.1:{admin_port}/metrics"
    async with session.get(url, timeout=timeout) as response:
        for line in (await response.text()).splitlines():
            if line.startswith("wsfleet_gateway_dead_connections_total "):
                return float(line.split()[1])
    return 0.0


async def _reader(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:  # aiohttp answers pings while reading
        pass


async def _hold(
    fleet: LocalFleet,
    proxy: FaultProxy,
    session: aiohttp.ClientSession,
    clients: int,
    hold_s: float,
    tag: str,
) -> int:
    """Connections that died while their clients kept answering."""
    sockets = []
    readers = []
    for n in range(clients):
        user = f"{tag}-{n}"
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    f"ws://127.0.0.1:{proxy.port}/ws?user={user}",
                    headers={"Authorization": f"Bearer {fleet.token(user)}"},
                    timeout=aiohttp.ClientWSTimeout(ws_close=1),
                ),
                REQUEST_TIMEOUT_S,
            )
        except (aiohttp.ClientError, TimeoutError):
            continue
        sockets.append(ws)
        readers.append(asyncio.create_task(_reader(ws)))
    await asyncio.sleep(hold_s)
    dead = sum(1 for ws in sockets if ws.closed)
    for task in readers:
        task.cancel()
    await _close_all(sockets)
    return dead


async def _close_all(sockets: list[aiohttp.ClientWebSocketResponse]) -> None:
    """Close every socket, each bounded (a lossy or blackholed path may never answer)."""

    async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
            await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S)

    await asyncio.gather(*(close(ws) for ws in sockets))


async def _detection(
    fleet: LocalFleet, session: aiohttp.ClientSession, admin_port: int, bound_s: float
) -> float | None:
    async with FaultProxy("127.0.0.1", fleet.options.port) as proxy:
        ws = await asyncio.wait_for(
            session.ws_connect(
                f"ws://127.0.0.1:{proxy.port}/ws?user=victim",
                headers={"Authorization": f"Bearer {fleet.token('victim')}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=1),
            ),
            REQUEST_TIMEOUT_S,
        )
        reader = asyncio.create_task(_reader(ws))
        try:
            await asyncio.sleep(1.0)
            before = await _dead(session, admin_port)
            proxy.set(Faults(blackhole=True))
            started = time.monotonic()
            while time.monotonic() - started < bound_s * 2:
                if await _dead(session, admin_port) > before:
                    return time.monotonic() - started
                await asyncio.sleep(0.2)
        finally:
            reader.cancel()
            await _close_all([ws])
    return None


async def sweep(
    interval: float, dead_after: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    cells = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-hb-") as tmp:
        fleet = LocalFleet(
            FleetOptions(
                sidecars=1,
                port=free_port(),
                admin_port=free_port(),
                state_dir=Path(tmp),
                log_level="warning",
                sidecar_args=(
                    "--heartbeat-interval",
                    str(interval),
                    "--heartbeat-timeout",
                    str(dead_after),
                ),
            )
        )
        await fleet.start()
        admin_port = fleet.info.sidecars["sidecar-1"].admin_port
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                detected = await _detection(fleet, session, admin_port, interval + dead_after)
                for loss in args.loss:
                    for latency in args.latency:
                        faults = Faults(loss=loss, latency_s=latency, jitter_s=latency / 5)
                        async with FaultProxy(
                            "127.0.0.1", fleet.options.port, faults=faults, seed=7
                        ) as proxy:
                            hold = max(args.hold, (interval + dead_after) * 1.5)
                            false_positives = await _hold(
                                fleet, proxy, session, args.clients, hold, f"c{loss}-{latency}"
                            )
                        cells.append(
                            {
                                "interval_s": interval,
                                "timeout_s": dead_after,
                                "loss": loss,
                                "latency_s": latency,
                                "clients": args.clients,
                                "hold_s": hold,
                                "false_positives": false_positives,
                                "detection_s": detected,
                                "bound_s": interval + dead_after,
                            }
                        )
                        print(
                            f"  {interval:g}/{dead_after:g} s  loss {loss:.0%}  "
                            f"latency {latency * 1000:.0f} ms: {false_positives} false positives",
                            flush=True,
                        )
        finally:
            await fleet.stop()
    return cells


async def main(args: argparse.Namespace) -> None:
    cells = []
    for setting in args.settings:
        interval, timeout = _setting(setting)
        cells += await sweep(interval, timeout, args)
    rows = [
        (
            f"{c['interval_s']:g}/{c['timeout_s']:g}",
            f"{c['loss']:.0%}",
            int(c["latency_s"] * 1000),
            f"{c['false_positives']}/{c['clients']}",
            "-" if c["detection_s"] is None else f"{c['detection_s']:.1f}",
            c["bound_s"],
        )
        for c in cells
    ]
    readable = table(
        rows, ["interval/timeout s", "loss", "latency ms", "false positives", "detect s", "bound s"]
    )
    publish("heartbeat_sweep", {"cells": cells}, readable, args.output_dir)


def _setting(text: str) -> tuple[float, float]:
    interval, _, timeout = text.partition("/")
    return float(interval), float(timeout)


SMOKE: dict[str, Any] = {
    "settings": ["0.5/1"],
    "loss": [0.0, 0.05],
    "latency": [0.0],
    "clients": 10,
    "hold": 1.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["2/2", "5/10", "10/20", "15/15"],
        help="interval/timeout, seconds (e.g. 10/20)",
    )
    parser.add_argument("--loss", type=fraction, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument(
        "--latency",
        type=non_negative_float,
        nargs="+",
        default=[0.0, 0.1, 0.5],
        help="seconds, one way",
    )
    parser.add_argument("--clients", type=positive_int, default=50)
    parser.add_argument(
        "--hold",
        type=positive_float,
        default=10.0,
        help="seconds per cell (at least 1.5 x the bound)",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    for setting in args.settings:
        try:
            interval, timeout = _setting(setting)
        except ValueError:
            return f"--settings {setting!r}: expected INTERVAL/TIMEOUT in seconds, e.g. 10/20"
        if not (interval > 0 and timeout > 0):
            return f"--settings {setting!r}: interval and timeout must both be positive"
    return None
