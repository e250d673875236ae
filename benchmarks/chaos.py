"""Pod batches killed under load, at full size: 4 sidecars, ``--clients`` SDK clients over
several processes, each receiving a stream; SIGKILL one pod, then two at once.

Reports: who reconnected (only the killed pods' clients should), reconnect attempts per
100 ms after each kill (peak/mean over the window of the middle 90 %; target <= 3),
handshake success (target >= 99.95 %), and whether every client received its whole stream
exactly once. Plot: reconnect attempts per 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import processes
from benchmarks.report import publish, ratio, table
from wsfleet.arg_types import positive_float, positive_int
from wsfleet_tools.chaos.reconnects import peak_to_mean
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port


async def worker_line(
    process: asyncio.subprocess.Process, timeout_s: float, what: str
) -> dict[str, Any]:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"an SDK worker did not report {what} within {timeout_s:g} s") from None
    if not line:
        code = await asyncio.wait_for(process.wait(), 10)
        raise RuntimeError(f"an SDK worker exited (code {code}) before it reported {what}")
    message: dict[str, Any] = json.loads(line)
    return message


async def start_workers(
    fleet: LocalFleet, args: argparse.Namespace
) -> list[asyncio.subprocess.Process]:
    per = -(-args.clients // args.processes)
    workers = []
    for index in range(args.processes):
        count = min(per, args.clients - index * per)
        if count <= 0:
            break
        workers.append(
            await processes.spawn(
                sys.executable,
                "-m",
                "benchmarks.sdk_workers",
                "--url",
                fleet.client_url,
                "--key-file",
                str(fleet.state_dir / "auth.key"),
                "--count",
                str(count),
                "--prefix",
                f"w{index}",
                "--stream",
                str(args.stream),
                "--interval-ms",
                str(args.interval_ms),
                "--backoff-base",
                str(args.backoff_base),
                "--connect-timeout",
                str(args.max_seconds),
                "--stream-deadline",
                str(args.stream_deadline),
                limit=1 << 28,  # a worker report is one (large) JSON line
            )
        )
    return workers


async def main(args: argparse.Namespace) -> None:
    stream_s = args.stream * args.interval_ms / 1000
    workers: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-chaos-") as tmp:
        fleet = LocalFleet(
            FleetOptions(
                sidecars=4,
                port=free_port(),
                admin_port=free_port(),
                state_dir=Path(tmp),
                log_level="warning",
            )
        )
        await fleet.start()
        try:
            workers = await start_workers(fleet, args)
            for worker in workers:
                await worker_line(worker, args.max_seconds, "its clients connected")
            await asyncio.sleep(stream_s * 0.2)
            first_kill = time.time()
            await fleet.stop_sidecar("sidecar-1", sig=signal.SIGKILL)
            await asyncio.sleep(stream_s * 0.3)
            second_kill = time.time()
            for pod in ("sidecar-2", "sidecar-3"):
                fleet.info.sidecars[pod].child.process.send_signal(signal.SIGKILL)
            for pod in ("sidecar-2", "sidecar-3"):
                await fleet.stop_sidecar(pod, sig=signal.SIGKILL)
            reports = []
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write(b'{"cmd": "report"}\n')
                await asyncio.wait_for(worker.stdin.drain(), 10)
            for worker in workers:
                reports.append(
                    await worker_line(
                        worker, stream_s + args.stream_deadline + 60, "its clients' report"
                    )
                )
                await processes.finish(worker, 30)
            envoy_stats = await _envoy_stats(fleet.info.envoy_admin_port)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await processes.finish(worker, 10)
            await fleet.stop()
    clients = [c for report in reports for c in report["clients"]]
    attempts = [t for c in clients for t in c["attempts"]]
    first = [t for t in attempts if first_kill <= t < second_kill]
    second = [t for t in attempts if t >= second_kill]
    failures = sum(c["failures"] for c in clients)
    errors: collections.Counter[str] = collections.Counter()
    for client in clients:
        errors.update(client["errors"])
    reconnected = [c for c in clients if len(c["pods"]) > 1]
    untouched_ok = all(c["pods"][0] == "sidecar-4" for c in clients if len(c["pods"]) == 1)
    success = ratio(len(attempts) - failures, len(attempts), 1)
    figures = {
        "clients": len(clients),
        "exact_streams": sum(c["exact"] for c in clients),
        "reconnected_clients": len(reconnected),
        "only_killed_pods_clients_reconnected": untouched_ok
        and all(c["pods"][0] != "sidecar-4" for c in reconnected),
        "first_kill": {"pods": 1, "attempts": len(first), "peak_to_mean": peak_to_mean(first)},
        "second_kill": {"pods": 2, "attempts": len(second), "peak_to_mean": peak_to_mean(second)},
        "handshake_success": success,
        "handshake_attempts": len(attempts),
        "failed_attempts_by_kind": dict(errors.most_common()),
        "envoy_counters": envoy_stats,
    }
    _plot(first, second, first_kill, second_kill, args.output_dir)
    rows = [
        ("kill 1 of 4", figures["first_kill"]["attempts"], figures["first_kill"]["peak_to_mean"]),
        ("kill 2 of 3", figures["second_kill"]["attempts"], figures["second_kill"]["peak_to_mean"]),
    ]
    readable = table(rows, ["event", "reconnect attempts", "peak/mean per 100 ms"])
    readable += (
        f"\n\n{figures['exact_streams']}/{figures['clients']} clients: whole stream, exactly once;"
        f" handshake success {'n/a' if success is None else f'{success:.5f}'} over"
        f" {len(attempts)} attempts; only killed pods' clients reconnected:"
        f" {figures['only_killed_pods_clients_reconnected']}"
        f"\nfailed attempts by kind: {figures['failed_attempts_by_kind']}"
        f"\nEnvoy: {envoy_stats}"
    )
    publish("chaos", figures, readable, args.output_dir)


ENVOY_STATS = (
    r"cluster\.gateways\.(upstream_cx_connect_fail|upstream_rq_retry|upstream_rq_retry_limit_exceeded"
    r"|upstream_rq_retry_success|upstream_cx_none_healthy|upstream_rq_503|upstream_rq_pending_overflow"
    r"|upstream_cx_connect_timeout|upstream_rq_pending_failure_eject|upstream_rq_rx_reset"
    r"|upstream_rq_tx_reset)$|http\.public\.downstream_rq_5xx$"
)


async def _envoy_stats(admin_port: int) -> dict[str, int]:
    """The Envoy counters that explain failed handshakes."""
    url = f"http://127.0.0.1:{admin_port}/stats?format=json&filter={ENVOY_STATS}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        stats = (await response.json())["stats"]
    return {s["name"]: int(s["value"]) for s in stats if "value" in s}


def _plot(
    first: list[float], second: list[float], first_kill: float, second_kill: float, directory: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, times, start, title in (
        (axes[0], first, first_kill, "SIGKILL 1 of 4 pods"),
        (axes[1], second, second_kill, "SIGKILL 2 of 3 pods"),
    ):
        counts = collections.Counter(int((t - start) / 0.1) for t in times)
        xs = range(max(counts) + 1 if counts else 1)
        axis.bar([x / 10 for x in xs], [counts.get(x, 0) for x in xs], width=0.1)
        axis.set(title=title, xlabel="seconds after the kill", ylabel="reconnect attempts / 100 ms")
    directory.mkdir(parents=True, exist_ok=True)
    figure.savefig(directory / "chaos-reconnects.png", dpi=100, bbox_inches="tight")
    plt.close("all")


SMOKE: dict[str, Any] = {
    "clients": 40,
    "processes": 2,
    "stream": 10,
    "interval_ms": 600,  # the second kill comes 1.8 s after the first: time to reconnect
    "backoff_base": 0.3,
    "stream_deadline": 30.0,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backoff-base",
        type=positive_float,
        default=2.0,
        help="the SDK's first reconnect window, s: a lost pod's clients spread over it (size it"
        " to what the survivors can handshake: docs/capacity.md)",
    )
    parser.add_argument("--clients", type=positive_int, default=4000)
    parser.add_argument("--processes", type=positive_int, default=4)
    parser.add_argument("--stream", type=positive_int, default=25, help="messages per client")
    parser.add_argument(
        "--interval-ms",
        type=positive_int,
        default=2000,
        help="between a client's messages (4000 clients at 2 s: 2000 msg/s, under what this"
        " 2-core machine's fleet sustains, so timings measure the fleet, not an overload)",
    )
    parser.add_argument(
        "--stream-deadline",
        type=positive_float,
        default=120.0,
        help="seconds a client may take, beyond the stream's own length, to receive it all",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=300.0,
        help="a bound on connecting every client",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.processes > args.clients:
        return f"--processes {args.processes} is more than --clients {args.clients}"
    return None
