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

from benchmarks.report import publish, summary, table
from wsfleet.launcher.children import Supervisor
from wsfleet.launcher.embedded_redis import start_embedded_redis
from wsfleet.launcher.ports import free_port
from wsfleet.readiness import wait_ready
from wsfleet.tokens import ensure_auth_key

SETTLE_S = 3.0


@dataclass
class ClientProcess:
    process: asyncio.subprocess.Process
    lines: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def pump(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.put_nowait(json.loads(line))

    async def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (message := await asyncio.wait_for(self.lines.get(), deadline - time.monotonic()))[
            "event"
        ] == "progress":
            continue
        assert message["event"] == event, message
        return message

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()


async def _start_server(
    kind: str, supervisor: Supervisor, run_dir: Path
) -> tuple[int, int, Path | None]:
    """Returns (port, pid, key file)."""
    if kind == "bare":
        ready = run_dir / "bare.ready.json"
        child = await supervisor.start(
            "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
        )
        facts = await wait_ready(ready)
        return int(facts["port"]), child.pid, None
    _, redis_url = await start_embedded_redis(supervisor, free_port(), run_dir / "redis")
    backend_ready = run_dir / "backend.ready.json"
    await supervisor.start(
        "backend",
        [
            sys.executable,
            "-m",
            "wsfleet",
            "--log-level",
            "warning",
            "backend",
            "--ready-file",
            str(backend_ready),
        ],
    )
    backend_port = int((await wait_ready(backend_ready))["port"])
    key_file = ensure_auth_key(run_dir)
    sidecar_ready = run_dir / "sidecar.ready.json"
    child = await supervisor.start(
        "sidecar",
        [
            sys.executable,
            "-m",
            "wsfleet",
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
    return int((await wait_ready(sidecar_ready))["port"]), child.pid, key_file


async def _spawn_clients(url: str, count: int, key_file: Path | None, prefix: str) -> ClientProcess:
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
        "120",
    ]
    if key_file is not None:
        argv += ["--key-file", str(key_file)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    client = ClientProcess(process)
    asyncio.create_task(client.pump())  # noqa: RUF006 (lives as long as the process)
    return client


async def measure(
    kind: str, counts: list[int], per_process: int, rtt_per_second: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"wsfleet-bench-{kind}-") as tmp:
        run_dir = Path(tmp)
        supervisor = Supervisor(run_dir / "logs")
        clients: list[ClientProcess] = []
        steps = []
        try:
            port, pid, key_file = await _start_server(kind, supervisor, run_dir)
            server = psutil.Process(pid)
            await asyncio.sleep(SETTLE_S)
            base_rss = server.memory_info().rss
            held = 0
            for target in counts:
                wave: list[ClientProcess] = []
                while held < target:
                    take = min(per_process, target - held)
                    wave.append(
                        await _spawn_clients(
                            f"ws://127.0.0.1:{port}/ws", take, key_file, f"{kind}-{held}"
                        )
                    )
                    held += take
                started = time.perf_counter()
                results = [await client.expect("connected", 300) for client in wave]
                seconds = time.perf_counter() - started
                clients += wave
                opened = sum(r["opened"] for r in results)
                handshakes = [t for r in results for t in r["handshake_s"]]
                errors: dict[str, int] = {}
                for r in results:
                    for error, n in r["errors"].items():
                        errors[error] = errors.get(error, 0) + n
                await asyncio.sleep(SETTLE_S)
                rss = server.memory_info().rss
                total_open = sum(c["opened"] for c in [r for r in results]) + sum(
                    s["new_connections"] for s in steps
                )
                steps.append(
                    {
                        "target": target,
                        "new_connections": opened,
                        "held": total_open,
                        "handshakes_per_s": opened / seconds if seconds else 0.0,
                        "handshake_latency_s": summary(handshakes),
                        "errors": errors,
                        "rss_mb": rss / 2**20,
                        "kb_per_connection": (rss - base_rss) / 1024 / max(1, total_open),
                    }
                )
            for client in clients:
                await client.send(cmd="rtt", per_second=max(1, rtt_per_second // len(clients)))
            rtt_results = [await client.expect("rtt", 300) for client in clients]
            rtts = [t for r in rtt_results for t in r["rtt_s"]]
            still_open = sum(r["open"] for r in rtt_results)
            cpu = server.cpu_times()
            for client in clients:
                await client.send(cmd="close")
            for client in clients:
                await asyncio.wait_for(client.process.wait(), 60)
        finally:
            for client in clients:
                if client.process.returncode is None:
                    client.process.kill()
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
    results = {
        kind: await measure(kind, args.counts, args.per_process, args.rtt_per_second)
        for kind in ("sidecar", "bare")
    }
    rows = []
    for kind, result in results.items():
        for step in result["steps"]:
            rows.append(
                (
                    kind,
                    step["held"],
                    step["kb_per_connection"],
                    step["handshakes_per_s"],
                    step["handshake_latency_s"]["p99"] * 1000,
                    sum(step["errors"].values()),
                    step["rss_mb"],
                )
            )
    sidecar, bare = results["sidecar"], results["bare"]
    ratios = {
        f"kb_per_connection_at_{s['held']}": s["kb_per_connection"] / b["kb_per_connection"]
        for s, b in zip(sidecar["steps"], bare["steps"], strict=True)
        if b["kb_per_connection"] > 0
    }
    ratios["handshakes_per_s_at_first_step"] = (
        sidecar["steps"][0]["handshakes_per_s"] / bare["steps"][0]["handshakes_per_s"]
    )
    readable = table(
        rows,
        ["server", "held", "KB/conn", "handshakes/s", "handshake p99 ms", "errors", "RSS MB"],
    )
    readable += "\n\n" + table(
        [
            (
                kind,
                r["open_after_rtt"],
                r["ping_rtt_s"]["p50"] * 1000,
                r["ping_rtt_s"]["p99"] * 1000,
                r["ping_rtt_s"]["max"] * 1000,
                r["pings_lost"],
            )
            for kind, r in results.items()
        ],
        ["server", "held", "ping RTT p50 ms", "p99 ms", "max ms", "lost"],
    )
    readable += "\n\n" + table(
        [(name, value) for name, value in ratios.items()], ["sidecar / bare", "ratio"]
    )
    publish("idle_connections", {"results": results, "ratios": ratios}, readable)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--per-process", type=int, default=2500)
    parser.add_argument("--rtt-per-second", type=int, default=4000)
