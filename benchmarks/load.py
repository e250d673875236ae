"""Load through the whole stack, beside its peers, in one run.

Targets, each started fresh:

- ``wsfleet``: the local fleet (Envoy -> sidecar -> gRPC backend, Redis registry, xDS);
- ``envoy+bare``: Envoy (static config, same listener settings) -> bare aiohttp echo;
- ``bare``: the bare aiohttp echo server alone.

Scenarios against each: a handshake **surge** (N connects at rate R, split over client
processes on 127.0.0.2, .3, ...: success %, latency p50/p99/max, errors by kind), the same
connections **sustained** for T seconds (RSS and CPU of every server process, cost per
connection), **keep-alive latency** (echo round trips while all are held), and
**throughput** (echo messages/s, and per server core), and **fan-out** (one connection
broadcasts ``--fanout`` messages through the backend to every connection: deliveries/s
and per server CPU-second). wsfleet's cost is reported as a
ratio to each peer. ``--envoy-variants`` also runs wsfleet with Envoy's defaults delivered
over xDS (1 MiB buffer limits, request ids) and with two Envoy workers: the before/after of
the settings wsfleet's policy delivers (``envoy-share`` isolates each knob).

Output: JSON, a Markdown table, and PNG plots in benchmarks/results/.
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

from benchmarks.report import RESULTS, publish, summary, table
from wsfleet.launcher.children import Supervisor
from wsfleet.launcher.envoy_bootstrap import envoy_binary
from wsfleet.launcher.fleet import FleetOptions, LocalFleet
from wsfleet.launcher.ports import free_port
from wsfleet.readiness import wait_ready

SAMPLE_S = 1.0
HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/"
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


@dataclass
class Target:
    name: str
    url: str
    processes: dict[str, psutil.Process]  # role -> process
    key_file: Path | None
    stop: Any  # async callable
    timeline: list[tuple[float, int]] = field(default_factory=list)


def _static_envoy_config(listen_port: int, upstream_port: int, admin_port: int) -> dict[str, Any]:
    hcm = {
        "@type": HCM,
        "stat_prefix": "bare",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "bare",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "bare", "timeout": "0s"}}
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    limit = {"max_connections": 1000000, "max_pending_requests": 1000000, "max_requests": 1000000}
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "bare",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "per_connection_buffer_limit_bytes": 32768,
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "bare",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "per_connection_buffer_limit_bytes": 32768,
                    "circuit_breakers": {"thresholds": [limit]},
                    "load_assignment": {
                        "cluster_name": "bare",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": 100000,
                    },
                }
            ]
        },
    }


async def start_bare(run_dir: Path, behind_envoy: bool) -> Target:
    supervisor = Supervisor(run_dir / "logs")
    ready = run_dir / "bare.ready.json"
    bare = await supervisor.start(
        "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
    )
    bare_port = int((await wait_ready(ready))["port"])
    processes = {"bare": psutil.Process(bare.pid)}
    url = f"ws://127.0.0.1:{bare_port}/ws"
    if behind_envoy:
        port, admin = free_port(), free_port()
        config = run_dir / "envoy.json"
        config.write_text(json.dumps(_static_envoy_config(port, bare_port, admin)))
        envoy = await supervisor.start(
            "envoy",
            [
                str(envoy_binary()),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ],
        )
        processes["envoy"] = psutil.Process(envoy.pid)
        await asyncio.sleep(1.0)
        url = f"ws://127.0.0.1:{port}/ws"

    async def stop() -> None:
        await supervisor.stop_all(10)

    return Target("envoy+bare" if behind_envoy else "bare", url, processes, None, stop)


async def start_wsfleet(run_dir: Path, name: str, policy: Path | None, concurrency: int) -> Target:
    options = FleetOptions(
        sidecars=1,
        port=free_port(),
        admin_port=free_port(),
        policy_path=policy,
        state_dir=run_dir / "state",
        envoy_concurrency=concurrency,
        log_level="warning",
    )
    fleet = LocalFleet(options)
    await fleet.start()
    processes = {}
    for child in fleet.supervisor.children:
        if child.running:
            role = (
                child.name.split("-")[0]
                if child.name.startswith(("sidecar", "backend"))
                else child.name
            )
            processes[role] = psutil.Process(child.pid)
    return Target(name, fleet.client_url, processes, fleet.state_dir / "auth.key", fleet.stop)


async def _spawn(target: Target, count: int, rate: float, index: int) -> asyncio.subprocess.Process:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--url",
        target.url,
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--source-ip",
        f"127.0.0.{2 + index}",
        "--prefix",
        f"p{index}",
    ]
    if target.key_file is not None:  # wsfleet: authenticated, protocol v1 as the SDKs speak
        argv += ["--key-file", str(target.key_file), "--v1"]
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def _read(
    process: asyncio.subprocess.Process,
    event: str,
    progress: dict[int, int],
    index: int,
    timeout_s: float,
) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(
            process.stdout.readline(), max(1.0, deadline - time.monotonic())
        )
        if not line:
            raise RuntimeError("a load generator exited early")
        message = json.loads(line)
        if message["event"] == "progress":
            progress[index] = message["open"]
            continue
        if message["event"] == event:
            return message
    raise TimeoutError(event)


async def _send(process: asyncio.subprocess.Process, **command: Any) -> None:
    assert process.stdin is not None
    process.stdin.write((json.dumps(command) + "\n").encode())
    await process.stdin.drain()


def _usage(processes: dict[str, psutil.Process]) -> dict[str, tuple[float, float]]:
    """role -> (RSS MB, CPU seconds)"""
    usage = {}
    for role, process in processes.items():
        try:
            cpu = process.cpu_times()
            usage[role] = (process.memory_info().rss / 2**20, cpu.user + cpu.system)
        except psutil.NoSuchProcess:
            usage[role] = (0.0, 0.0)
    return usage


async def measure(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    await asyncio.sleep(2.0)
    base = _usage(target.processes)
    per_process = -(-args.connections // args.clients)
    progress: dict[int, int] = {}
    started = time.monotonic()
    generators = [
        await _spawn(
            target,
            min(per_process, args.connections - i * per_process),
            args.rate / args.clients,
            i,
        )
        for i in range(args.clients)
    ]

    async def sample() -> None:
        while True:
            target.timeline.append((time.monotonic() - started, sum(progress.values())))
            line = f"\r  {target.name:<12} {sum(progress.values()):>7} / {args.connections} open"
            sys.stderr.write(line)
            sys.stderr.flush()
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    connected = await asyncio.gather(
        *(_read(g, "connected", progress, i, args.max_seconds) for i, g in enumerate(generators))
    )
    for i, result in enumerate(connected):
        progress[i] = result["opened"]
    surge_s = time.monotonic() - started
    opened = sum(r["opened"] for r in connected)
    errors: dict[str, int] = {}
    for result in connected:
        for kind, n in result["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    handshakes = [t for r in connected for t in r["handshake_s"]]
    await asyncio.sleep(args.hold)  # sustained
    held = _usage(target.processes)
    rtts = await asyncio.gather(
        *(
            _send(g, cmd="rtt", mode="echo", per_second=args.rtt_rate / args.clients)
            for g in generators
        )
    )
    del rtts
    rtt_results = await asyncio.gather(
        *(_read(g, "rtt", progress, i, args.max_seconds) for i, g in enumerate(generators))
    )
    cpu_before = _usage(target.processes)
    for g in generators:
        await _send(g, cmd="throughput", messages=args.messages, size=64)
    throughput = await asyncio.gather(
        *(_read(g, "throughput", progress, i, args.max_seconds) for i, g in enumerate(generators))
    )
    cpu_after = _usage(target.processes)
    fanout = await _fanout(target, generators, progress, opened, args)
    sampler.cancel()
    sys.stderr.write("\n")
    for g in generators:
        await _send(g, cmd="close")
    for g in generators:
        await asyncio.wait_for(g.wait(), 60)
    received = sum(t["received"] for t in throughput)
    seconds = max(t["seconds"] for t in throughput)
    server_cpu = sum(cpu_after[r][1] - cpu_before[r][1] for r in target.processes)
    # CPU of the surge, plus the hold (idle but for a round of heartbeats)
    surge_cpu = {r: held[r][1] - base[r][1] for r in target.processes}
    message_cpu = {r: cpu_after[r][1] - cpu_before[r][1] for r in target.processes}
    per_role_kb = {
        role: (held[role][0] - base[role][0]) * 1024 / max(1, opened) for role in target.processes
    }
    rtt = [t for r in rtt_results for t in r["rtt_s"]]
    return {
        "target": target.name,
        "connections": opened,
        "surge": {
            "requested": args.connections,
            "rate_per_s": args.rate,
            "seconds": surge_s,
            "success": opened / args.connections,
            "handshakes_per_s": opened / surge_s,
            "latency_s": summary(handshakes),
            "errors": errors,
            "cpu_s": surge_cpu,
            "handshakes_per_cpu_s": {r: opened / max(0.01, c) for r, c in surge_cpu.items()},
        },
        "sustained": {
            "hold_s": args.hold,
            "rss_mb": {role: held[role][0] for role in target.processes},
            "kb_per_connection": per_role_kb,
            "kb_per_connection_total": sum(per_role_kb.values()),
        },
        "echo_rtt_s": summary(rtt),
        "rtt_lost": sum(r["lost"] for r in rtt_results),
        "throughput": {
            "messages": received,
            "seconds": seconds,
            "messages_per_s": received / seconds if seconds else 0.0,
            "server_cpu_s": server_cpu,
            "messages_per_cpu_s": received / server_cpu if server_cpu else 0.0,
            "cpu_s": message_cpu,
            "messages_per_cpu_s_by_process": {
                r: received / max(0.01, c) for r, c in message_cpu.items()
            },
            # Redis keeps each message in the session's replay buffer
            "rss_growth_bytes_per_message": {
                r: (cpu_after[r][0] - held[r][0]) * 2**20 / max(1, received)
                for r in target.processes
            },
        },
        "fanout": fanout,
        "timeline": target.timeline,
    }


async def _fanout(
    target: Target,
    generators: list[asyncio.subprocess.Process],
    progress: dict[int, int],
    opened: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One connection broadcasts ``--fanout`` messages; every connection must get each."""
    for g in generators:
        await _send(g, cmd="fanout_reset")
    await asyncio.gather(
        *(_read(g, "fanout_ready", progress, i, args.max_seconds) for i, g in enumerate(generators))
    )
    before = _usage(target.processes)
    started = time.perf_counter()
    for i, g in enumerate(generators):
        await _send(g, cmd="fanout", messages=args.fanout, send=i == 0, deadline_s=60)
    results = await asyncio.gather(
        *(_read(g, "fanout", progress, i, args.max_seconds) for i, g in enumerate(generators))
    )
    after = _usage(target.processes)
    delivered = sum(r["received"] for r in results)
    seconds = max(r["last"] for r in results) - started if delivered else 0.0
    cpu = sum(after[r][1] - before[r][1] for r in target.processes)
    return {
        "broadcasts": args.fanout,
        "expected": args.fanout * opened,
        "delivered": delivered,
        "seconds": seconds,
        "deliveries_per_s": delivered / seconds if seconds > 0 else 0.0,
        "deliveries_per_cpu_s": delivered / cpu if cpu > 0 else 0.0,
        "cpu_s": {r: after[r][1] - before[r][1] for r in target.processes},
    }


def _plots(results: list[dict[str, Any]], stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        xs, ys = zip(*result["timeline"], strict=True) if result["timeline"] else ((), ())
        axis.plot(xs, ys, label=result["target"])
    axis.set(xlabel="seconds", ylabel="open connections", title="connections over time (surge)")
    axis.legend()
    path = RESULTS / f"{stem}-connections.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    figure, axis = plt.subplots(figsize=(7, 4))
    names = [r["target"] for r in results]
    for offset, key in enumerate(("p50", "p99", "max")):
        axis.bar(
            [i + offset * 0.27 for i in range(len(names))],
            [r["echo_rtt_s"][key] * 1000 for r in results],
            width=0.27,
            label=key,
        )
    axis.set_xticks([i + 0.27 for i in range(len(names))], names)
    axis.set(ylabel="ms", title="echo round trip with every connection held")
    axis.set_yscale("log")
    axis.legend()
    path = RESULTS / f"{stem}-rtt.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    return paths


async def main(args: argparse.Namespace) -> None:
    results = []
    variants: list[tuple[str, Path | None, int]] = [("wsfleet", None, 1)]
    with tempfile.TemporaryDirectory(prefix="wsfleet-load-") as tmp:
        if args.envoy_variants:
            defaults = Path(tmp) / "envoy-defaults.yaml"
            defaults.write_text(ENVOY_DEFAULT_BUFFERS)
            variants.append(("wsfleet/envoy-defaults", defaults, 1))
            variants.append(("wsfleet/2-workers", None, 2))
        for name, policy, concurrency in variants:
            target = await start_wsfleet(
                Path(tmp) / name.replace("/", "-"), name, policy, concurrency
            )
            try:
                results.append(await measure(target, args))
            finally:
                await target.stop()
        for behind in (True, False):
            target = await start_bare(Path(tmp) / f"bare-{behind}", behind)
            try:
                results.append(await measure(target, args))
            finally:
                await target.stop()
    by_name = {r["target"]: r for r in results}
    ours = by_name["wsfleet"]
    ratios = {}
    for peer in ("envoy+bare", "bare"):
        other = by_name[peer]
        ratios[f"kb_per_connection vs {peer}"] = ours["sustained"]["kb_per_connection_total"] / max(
            0.001, other["sustained"]["kb_per_connection_total"]
        )
        ratios[f"echo_rtt_p99 vs {peer}"] = ours["echo_rtt_s"]["p99"] / max(
            1e-6, other["echo_rtt_s"]["p99"]
        )
        ratios[f"handshakes_per_s vs {peer}"] = ours["surge"]["handshakes_per_s"] / max(
            0.001, other["surge"]["handshakes_per_s"]
        )
        ratios[f"messages_per_cpu_s vs {peer}"] = ours["throughput"]["messages_per_cpu_s"] / max(
            0.001, other["throughput"]["messages_per_cpu_s"]
        )
        ratios[f"fanout_deliveries_per_cpu_s vs {peer}"] = ours["fanout"][
            "deliveries_per_cpu_s"
        ] / max(0.001, other["fanout"]["deliveries_per_cpu_s"])
    rows = [
        (
            r["target"],
            r["connections"],
            f"{r['surge']['success']:.4%}",
            r["surge"]["handshakes_per_s"],
            r["surge"]["latency_s"]["p99"] * 1000,
            sum(r["surge"]["errors"].values()),
            r["sustained"]["kb_per_connection_total"],
            ", ".join(f"{k} {v:.1f}" for k, v in r["sustained"]["kb_per_connection"].items()),
            r["echo_rtt_s"]["p50"] * 1000,
            r["echo_rtt_s"]["p99"] * 1000,
            r["throughput"]["messages_per_s"],
            r["throughput"]["messages_per_cpu_s"],
            f"{r['fanout']['delivered']}/{r['fanout']['expected']}",
            r["fanout"]["deliveries_per_s"],
            r["fanout"]["deliveries_per_cpu_s"],
        )
        for r in results
    ]
    readable = table(
        rows,
        [
            "target",
            "conns",
            "surge ok",
            "hs/s",
            "hs p99 ms",
            "errors",
            "KB/conn",
            "KB/conn by process",
            "echo p50 ms",
            "echo p99 ms",
            "msg/s",
            "msg per CPU-s",
            "fan-out got",
            "fan-out/s",
            "fan-out per CPU-s",
        ],
    )
    readable += "\n\n" + table([(k, v) for k, v in ratios.items()], ["wsfleet / peer", "ratio"])
    RESULTS.mkdir(exist_ok=True)
    plots = _plots(results, "load")
    readable += "\n\nplots: " + ", ".join(str(p) for p in plots)
    publish("load", {"results": results, "ratios": ratios, "measured": measured(ours)}, readable)


def measured(ours: dict[str, Any]) -> dict[str, float]:
    """The capacity model's inputs (wsfleet.capacity.Measured) from wsfleet's run."""
    kb = ours["sustained"]["kb_per_connection"]
    handshakes = ours["surge"]["handshakes_per_cpu_s"]
    messages = ours["throughput"]["messages_per_cpu_s_by_process"]
    return {
        "sidecar_kb_per_connection": kb["sidecar"],
        "envoy_kb_per_connection": kb["envoy"],
        "redis_bytes_per_connection": kb["redis"] * 1024,
        "sidecar_handshakes_per_s": handshakes["sidecar"],
        "envoy_handshakes_per_s_per_worker": handshakes["envoy"],
        "sidecar_messages_per_s": messages["sidecar"],
        "redis_bytes_per_replayed_message": ours["throughput"]["rss_growth_bytes_per_message"][
            "redis"
        ],
        # an echo costs Redis 6 pipelined commands: the client's message (HSET last_cseq,
        # PEXPIRE) and the reply (XADD to the replay buffer, HSET last_seq, 2 PEXPIRE)
        "redis_ops_per_s_per_core": messages["redis"] * 6,
    }


ENVOY_DEFAULT_BUFFERS = """\
listeners:
  - name: public
    port: 8080
    routes: [websocket]
    buffer_limit_bytes: 1048576
    request_ids: true
routes:
  - name: websocket
    path_prefix: /ws
    pool: gateways
pools:
  - name: gateways
    buffer_limit_bytes: 1048576
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=1000.0, help="handshakes/s, all clients")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds held before measuring")
    parser.add_argument("--rtt-rate", type=float, default=4000.0, help="echo probes/s, all clients")
    parser.add_argument("--messages", type=int, default=5, help="echo messages per connection")
    parser.add_argument("--fanout", type=int, default=5, help="broadcasts to every connection")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="a bound on every phase")
    parser.add_argument(
        "--envoy-variants", action="store_true", help="also Envoy's defaults (over xDS), 2 workers"
    )
