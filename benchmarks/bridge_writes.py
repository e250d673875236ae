"""What one write of the backend bridge costs: gRPC against a plain stream.

The gateway and the backend kit send their batches over one gRPC stream (grpc.aio); under
traffic spread thinly over many sessions each batch carries a few messages, and the writes
themselves take a large share of both processes' CPU. Here one process writes ``--size``
bytes at each of ``--rates`` writes a second for ``--seconds`` over a grpc.aio stream and
then over a plain asyncio TCP stream (each message behind its length, the peer: what the
same batches would cost without gRPC), to a server that echoes each; both ends run on
uvloop, the writer on the clients' core and the servers on the other. Reported: the
writer's and the server's CPU per write (its echo included), and gRPC's ratio to the plain
stream. Transport only: both carry the same bytes, no protobuf.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from benchmarks import processes
from benchmarks.report import publish, ratio, table
from wsfleet.arg_types import positive_float, positive_int
from wsfleet.readiness import wait_ready
from wsfleet_tools.launcher.children import Supervisor

TRANSPORTS = ("grpc", "stream")


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _write(
    transport: str, port: int, rate: float, args: argparse.Namespace, pinned: bool
) -> dict[str, Any]:
    """One writer process's run: its JSON line."""
    count = max(1, int(rate * args.seconds))
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "benchmarks.bridge_ends", "write", "--transport", transport),
        *("--port", str(port), "--rate", str(rate), "--count", str(count)),
        *("--size", str(args.size), "--max-seconds", str(args.seconds * 3 + 30)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        if pinned:
            processes.pin(child.pid, frozenset({processes.CLIENT_CORE}))
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), args.seconds * 3 + 60)
        await asyncio.wait_for(child.wait(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0 or not line:
        raise RuntimeError(f"the {transport} writer exited {child.returncode}")
    result: dict[str, Any] = json.loads(line)
    return result


async def main(args: argparse.Namespace) -> None:
    pinned = (os.cpu_count() or 1) >= 2
    rows: list[tuple[Any, ...]] = []
    figures: dict[str, Any] = {"size_bytes": args.size, "seconds": args.seconds, "rates": {}}
    with tempfile.TemporaryDirectory(prefix="wsfleet-bench-bridge-") as tmp:
        supervisor = Supervisor(Path(tmp) / "logs")
        try:
            servers: dict[str, tuple[int, psutil.Process]] = {}
            for transport in TRANSPORTS:
                ready = Path(tmp) / f"{transport}.ready.json"
                child = await supervisor.start(
                    f"{transport}-echo",
                    [
                        *(sys.executable, "-m", "benchmarks.bridge_ends", "serve"),
                        *("--transport", transport, "--ready-file", str(ready)),
                    ],
                )
                port = int((await wait_ready(ready, 30.0))["port"])
                if pinned:
                    processes.pin(child.pid, frozenset({processes.SERVER_CORE}))
                servers[transport] = (port, psutil.Process(child.pid))
            for rate in args.rates:
                measured: dict[str, Any] = {}
                for transport in TRANSPORTS:
                    port, server = servers[transport]
                    before = _cpu_s(server)
                    run = await _write(transport, port, rate, args, pinned)
                    written = max(1, run["written"])
                    measured[transport] = {
                        **run,
                        "writer_us_per_write": run["cpu_s"] / written * 1e6,
                        "server_us_per_write": (_cpu_s(server) - before) / written * 1e6,
                    }
                for side in ("writer", "server"):
                    measured[f"{side}_ratio"] = ratio(
                        measured["grpc"][f"{side}_us_per_write"],
                        measured["stream"][f"{side}_us_per_write"],
                    )
                figures["rates"][f"{rate:g}"] = measured
                for transport in TRANSPORTS:
                    one = measured[transport]
                    rows.append(
                        (
                            f"{rate:g}",
                            transport,
                            f"{one['echoed']} / {one['written']}",
                            f"{one['writer_us_per_write']:.0f}",
                            f"{one['server_us_per_write']:.0f}",
                        )
                    )
        finally:
            await supervisor.stop_all(10.0)
    readable = table(
        rows,
        ["writes/s", "transport", "echoed", "writer us CPU per write", "server us per write"],
    )
    for rate, measured in figures["rates"].items():
        readable += (
            f"\n{rate} writes/s: gRPC costs the writer {_times(measured['writer_ratio'])} and"
            f" the server {_times(measured['server_ratio'])} what the plain stream does"
        )
    publish("bridge_writes", figures, readable, args.output_dir)


SMOKE: dict[str, Any] = {"rates": [100.0], "seconds": 2.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rates",
        type=positive_float,
        nargs="+",
        default=[100.0, 1000.0],
        help="writes a second, one run per rate and transport (default 100 1000: one"
        " gateway's bridge at its 10 ms batch spacing, and ten times that)",
    )
    parser.add_argument(
        "--seconds", type=positive_float, default=10.0, help="each run's length (default 10)"
    )
    parser.add_argument(
        "--size", type=positive_int, default=512, help="bytes per write (default 512)"
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if any(rate > 20_000 for rate in args.rates):
        return "--rates: at most 20000 writes a second"
    if args.size > 1 << 20:
        return "--size: at most 1 MiB (what the echo servers take)"
    return None
