"""Idle authenticated connections held on one sidecar, against a bare aiohttp echo server.

For each server (the wsfleet sidecar with its Redis registry and gRPC backend
link, then the bare aiohttp WebSocket echo server), client processes of at most
``--per-process`` connections open ``--counts`` connections in steps (e.g. 5k,
then 10k), and the benchmark reports the server's RSS per connection (KB),
handshakes/s, and ping round-trip times with everything held; then the ratios
sidecar / bare. Clients run in separate processes (``ulimit -n`` is per process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import processes
from benchmarks.report import fmt_ratio, ms, per, publish, ratio, summary, table
from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet.readiness import wait_ready
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis
from wsfleet_tools.launcher.ports import free_port
from xds_server.policy_loader import default_bundle

START_TIMEOUT_S = 30.0


@dataclass
class ClientProcess:
    process: asyncio.subprocess.Process
    lines: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    pumping: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.put_nowait(json.loads(line))
        self.lines.put_nowait(None)  # the process closed its output: it is exiting

    async def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message = await asyncio.wait_for(self.lines.get(), deadline - time.monotonic())
            except TimeoutError:
                raise TimeoutError(
                    f"a load generator did not report '{event}' within {timeout_s:g} s"
                ) from None
            if message is None:
                code = await asyncio.wait_for(self.process.wait(), 10)
                raise RuntimeError(f"a load generator exited (code {code}) before '{event}'")
            if message["event"] == event:
                return message
            if message["event"] != "progress":
                raise RuntimeError(f"a load generator said {message} while '{event}' was due")

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()


async def _announce_default_hash_key(redis_url: str) -> None:
    """What the control plane would do: tell the sidecar where users are hashed (the
    default policy's hash key). A lone sidecar refuses handshakes until it knows."""
    registry = RedisRegistry(redis_url)
    try:
        policy = default_bundle().policy
        await registry.put_hash_sources({p.name: p.hash_key.sources() for p in policy.pools})
    finally:
        await registry.close()


async def _start_server(kind: str, supervisor: Supervisor, run_dir: Path) -> tuple[int, int, Path]:
    """Returns (port, pid, the key the handshakes' tokens are signed with)."""
    if kind == "bare":
        ready = run_dir / "bare.ready.json"
        child = await supervisor.start(
            "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
        )
        facts = await wait_ready(ready, START_TIMEOUT_S)
        # the same handshake request as the sidecar's, token included (bare ignores it)
        return int(facts["port"]), child.pid, ensure_auth_key(run_dir)
    _, redis_url = await start_embedded_redis(supervisor, free_port(), run_dir / "redis")
    await _announce_default_hash_key(redis_url)
    backend_ready = run_dir / "backend.ready.json"
    await supervisor.start(
        "backend",
        [
            sys.executable,
            "-m",
            "wsfleet_tools",
            "--log-level",
            "warning",
            "backend",
            "--ready-file",
            str(backend_ready),
        ],
    )
    backend_port = int((await wait_ready(backend_ready, START_TIMEOUT_S))["port"])
    key_file = ensure_auth_key(run_dir)
    sidecar_ready = run_dir / "sidecar.ready.json"
    child = await supervisor.start(
        "sidecar",
        [
            sys.executable,
            "-m",
            "wsfleet_tools",
            "--log-level",
            "warning",
            "sidecar",
            "--pod-id",
            "bench-sidecar",
            "--redis-url",
            redis_url,
            "--auth-key-file",
            str(key_file),
            "--backend",
            f"127.0.0.1:{backend_port}",
            "--ready-file",
            str(sidecar_ready),
        ],
    )
    return int((await wait_ready(sidecar_ready, START_TIMEOUT_S))["port"]), child.pid, key_file


async def _spawn_clients(
    url: str, count: int, key_file: Path, prefix: str, max_seconds: float, v1: bool
) -> ClientProcess:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--url",
        url,
        "--count",
        str(count),
        "--prefix",
        prefix,
        "--deadline-s",
        str(max_seconds),
        "--handshake-timeout",
        str(min(30.0, max_seconds)),
    ]
    argv += ["--key-file", str(key_file)]
    if v1:  # offered to both servers; bare ignores it and is held as a plain WebSocket
        argv.append("--v1")
    client = ClientProcess(await processes.spawn(*argv))
    client.pumping = asyncio.create_task(client.pump())
    return client


async def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    counts, per_process, rtt_per_second = args.counts, args.per_process, args.rtt_per_second
    with tempfile.TemporaryDirectory(prefix=f"wsfleet-bench-{kind}-") as tmp:
        run_dir = Path(tmp)
        supervisor = Supervisor(run_dir / "logs")
        clients: list[ClientProcess] = []
        steps: list[dict[str, Any]] = []
        try:
            port, pid, key_file = await _start_server(kind, supervisor, run_dir)
            server = psutil.Process(pid)
            await asyncio.sleep(args.settle)
            base_rss = server.memory_info().rss
            held = 0
            for target in counts:
                wave: list[ClientProcess] = []
                while held < target:
                    take = min(per_process, target - held)
                    wave.append(
                        await _spawn_clients(
                            f"ws://127.0.0.1:{port}/ws",
                            take,
                            key_file,
                            f"{kind}-{held}",
                            args.max_seconds,
                            args.v1,
                        )
                    )
                    held += take
                started = time.perf_counter()
                clients += wave
                results = [
                    await client.expect("connected", args.max_seconds + 30) for client in wave
                ]
                seconds = time.perf_counter() - started
                opened = sum(r["opened"] for r in results)
                handshakes = [t for r in results for t in r["handshake_s"]]
                errors: dict[str, int] = {}
                for r in results:
                    for error, n in r["errors"].items():
                        errors[error] = errors.get(error, 0) + n
                await asyncio.sleep(args.settle)
                rss = server.memory_info().rss
                total_open = sum(c["opened"] for c in [r for r in results]) + sum(
                    s["new_connections"] for s in steps
                )
                steps.append(
                    {
                        "target": target,
                        "new_connections": opened,
                        "held": total_open,
                        "handshakes_per_s": per(opened, seconds),
                        "handshake_latency_s": summary(handshakes),
                        "errors": errors,
                        "rss_mb": rss / 2**20,
                        "kb_per_connection": per((rss - base_rss) / 1024, total_open, 1),
                    }
                )
            for client in clients:
                await client.send(
                    cmd="rtt",
                    per_second=max(1, rtt_per_second // len(clients)),
                    max_seconds=args.max_seconds,
                )
            rtt_results = [await client.expect("rtt", args.max_seconds + 30) for client in clients]
            rtts = [t for r in rtt_results for t in r["rtt_s"]]
            still_open = sum(r["open"] for r in rtt_results)
            cpu = server.cpu_times()
            for client in clients:
                await client.send(cmd="close")
            for client in clients:
                await processes.finish(client.process, 60)
        finally:
            for client in clients:
                if client.process.returncode is None:
                    client.process.kill()
                await processes.finish(client.process, 10)
                if client.pumping is not None:
                    client.pumping.cancel()
            await supervisor.stop_all(10.0)
    return {
        "server": kind,
        "base_rss_mb": base_rss / 2**20,
        "steps": steps,
        "ping_rtt_s": summary(rtts),
        "pings_lost": sum(r["lost"] for r in rtt_results),
        "open_after_rtt": still_open,
        "server_cpu_s": cpu.user + cpu.system,
    }


async def main(args: argparse.Namespace) -> None:
    results = {kind: await measure(kind, args) for kind in ("sidecar", "bare")}
    rows = []
    for kind, result in results.items():
        for step in result["steps"]:
            rows.append(
                (
                    kind,
                    step["held"],
                    step["kb_per_connection"],
                    step["handshakes_per_s"],
                    ms(step["handshake_latency_s"]["p99"]),
                    sum(step["errors"].values()),
                    step["rss_mb"],
                )
            )
    sidecar, bare = results["sidecar"], results["bare"]
    ratios = {
        f"kb_per_connection_at_{s['target']}": ratio(
            s["kb_per_connection"], b["kb_per_connection"], 0.01
        )
        for s, b in zip(sidecar["steps"], bare["steps"], strict=True)
    }
    ratios["handshakes_per_s_at_first_step"] = ratio(
        sidecar["steps"][0]["handshakes_per_s"], bare["steps"][0]["handshakes_per_s"]
    )
    ratios["ping_rtt_p50"] = ratio(sidecar["ping_rtt_s"]["p50"], bare["ping_rtt_s"]["p50"], 1e-6)
    ratios["ping_rtt_p99"] = ratio(sidecar["ping_rtt_s"]["p99"], bare["ping_rtt_s"]["p99"], 1e-6)
    readable = table(
        rows,
        ["server", "held", "KB/conn", "handshakes/s", "handshake p99 ms", "errors", "RSS MB"],
    )
    readable += "\n\n" + table(
        [
            (
                kind,
                r["open_after_rtt"],
                ms(r["ping_rtt_s"]["p50"]),
                ms(r["ping_rtt_s"]["p99"]),
                ms(r["ping_rtt_s"]["max"]),
                r["pings_lost"],
            )
            for kind, r in results.items()
        ],
        ["server", "held", "ping RTT p50 ms", "p99 ms", "max ms", "lost"],
    )
    readable += "\n\n" + table(
        [(name, fmt_ratio(value)) for name, value in ratios.items()], ["sidecar / bare", "ratio"]
    )
    figures = {"v1": args.v1, "results": results, "ratios": ratios}
    publish("idle_connections", figures, readable, args.output_dir)


SMOKE: dict[str, Any] = {
    "counts": [40, 80],
    "per_process": 40,
    "rtt_per_second": 400,
    "settle": 0.5,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--counts",
        type=positive_int,
        nargs="+",
        default=[5000, 10000],
        help="connections held after each step (increasing)",
    )
    parser.add_argument(
        "--per-process", type=positive_int, default=2500, help="connections per client process"
    )
    parser.add_argument("--rtt-per-second", type=positive_int, default=4000)
    parser.add_argument(
        "--settle",
        type=non_negative_float,
        default=3.0,
        help="seconds before the baseline and after each step, before reading memory",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on every phase"
    )
    parser.add_argument(
        "--v1",
        action="store_true",
        help="clients offer protocol wsfleet.v1 (the sidecar holds v1 sessions; bare ignores it)",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if any(b <= a for a, b in zip(args.counts, args.counts[1:], strict=False)):
        return f"--counts {' '.join(map(str, args.counts))}: each step must hold more"
    return None
