"""What the load-generator processes share (benchmarks/loadgen.py on aiohttp,
benchmarks/scale_client.py on picows): their command line, and opening ``--count``
connections at ``--rate`` handshakes/s with at most ``--concurrency`` in flight and none
started after ``--deadline-s``, with ``{"event": "progress"}`` lines meanwhile and the
``{"event": "connected", ...}`` line at the end. Light on purpose: no WebSocket library.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sized
from pathlib import Path

from benchmarks.worker_pipe import say
from wsfleet.arg_types import non_negative_float, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=positive_int, required=True)
    parser.add_argument(
        "--rate", type=non_negative_float, default=0.0, help="handshakes/s (0: as fast as possible)"
    )
    parser.add_argument("--source-ip", help="e.g. 127.0.0.2: spreads client ports over addresses")
    parser.add_argument("--prefix", default=prefix)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument(
        "--v1", action="store_true", help="speak protocol wsfleet.v1 (sequence numbers, replay)"
    )
    parser.add_argument("--concurrency", type=positive_int, default=200)
    parser.add_argument(
        "--deadline-s", type=positive_float, default=300.0, help="no handshake starts after"
    )
    parser.add_argument("--handshake-timeout", type=positive_float, default=30.0)
    parser.add_argument(
        "--idle-s", type=positive_float, default=900.0, help="exit if no command comes for this"
    )


async def open_paced(
    args: argparse.Namespace,
    connect: Callable[[str], Awaitable[None]],
    kind: Callable[[Exception], str],
    held: Sized,
) -> None:
    """Start the n-th handshake (``connect(user)``, which keeps the connection in ``held``
    or raises) at n / ``--rate``; a failure is counted under ``kind(exc)``, never raised."""
    handshakes: list[float] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(args.concurrency)
    deadline = time.monotonic() + args.deadline_s

    def count(error: str, n: int = 1) -> None:
        errors[error] = errors.get(error, 0) + n

    async def open_one(n: int) -> None:
        async with gate:
            if time.monotonic() > deadline:
                count("deadline")
                return
            started = time.perf_counter()
            try:
                await connect(f"{args.prefix}-{n}")
            except Exception as exc:  # counted by kind, never raised
                count(kind(exc))
                return
            handshakes.append(time.perf_counter() - started)

    async def progress() -> None:
        while True:
            say(event="progress", open=len(held))
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(progress())
    opening = []
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    started, cpu_started = time.perf_counter(), time.process_time()
    for n in range(args.count):  # rate control: start the n-th handshake at n / rate
        if interval:
            due = started + n * interval
            if time.monotonic() + (due - time.perf_counter()) > deadline:
                count("deadline", args.count - n)
                break  # the rest would start after the deadline
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        opening.append(asyncio.create_task(open_one(n)))
    await asyncio.gather(*opening)
    reporter.cancel()
    say(
        event="connected",
        opened=len(held),
        errors=errors,
        seconds=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,  # this generator's own CPU in the surge
        handshake_s=handshakes,
    )
