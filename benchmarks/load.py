"""Load through the whole stack, beside its peers, in one run.

Targets, each started fresh:

- ``wsfleet raw``: the local fleet (Envoy -> sidecar -> gRPC backend, Redis registry, xDS),
  plain WebSocket echo: no ``wsfleet.v1`` subprotocol, so no envelopes, sequence numbers
  or replay buffer;
- ``wsfleet v1``: the same fleet spoken to as the SDKs do (protocol v1: JSON envelopes,
  numbered messages, every reply kept in the session's replay buffer in Redis);
- ``envoy+bare``: Envoy (static config, same listener settings) -> bare aiohttp echo;
- ``bare``: the bare aiohttp echo server alone.

Scenarios against each: a handshake **surge** (N connects at rate R, split over client
processes on 127.0.0.2, .3, ...: success %, latency p50/p99/max, errors by kind), the same
connections **sustained** for T seconds (RSS and CPU of every server process, cost per
connection), **echo latency** (echo round trips while all are held), **throughput** (echo
messages/s, and per server CPU-second), **fan-out** (one connection broadcasts
``--fanout`` messages through the backend to every connection: deliveries/s and per server
CPU-second), and **keep-alive** (``--keepalive-held`` fresh connections held while
``--keepalive-rate`` echo messages/s are spread over them for ``--keepalive-seconds``;
WebSocket ping RTT p50/p99: a client ping frame and the server's pong frame, answered by
the sidecar through Envoy for wsfleet and by aiohttp for the bare server). Each wsfleet
row is reported as a ratio to each peer; a ratio with nothing measurable to divide by is
n/a (null in the JSON).

``--pin``: load generators (and this process) run on core 0, every server-side process
(Envoy, sidecar, backend, Redis, xDS server, bare server) on core 1, so per-core figures
do not depend on the client. ``--envoy-variants`` also runs wsfleet v1 with Envoy's
defaults delivered over xDS (1 MiB buffer limits, request ids) and with two Envoy workers:
the before/after of the settings wsfleet's policy delivers (``envoy-share`` isolates each
knob).

Output: JSON, a table, and PNG plots in the output directory (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks import processes
from benchmarks.report import (
    MIN_CPU_S,
    fmt_ratio,
    ms,
    per,
    publish,
    ratio,
    summary,
    table,
)
from wsfleet.arg_types import non_negative_float, non_negative_int, positive_float, positive_int
from wsfleet.readiness import wait_ready
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.envoy_bootstrap import envoy_binary
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

START_TIMEOUT_S = 30.0
HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/"
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
WSFLEET_ROWS = ("wsfleet raw", "wsfleet v1")
PEERS = ("envoy+bare", "bare")
PING_PROBE = (
    "WebSocket ping frame from the client -> pong frame (answered by the sidecar, through"
    " Envoy, for wsfleet; by the bare aiohttp server, through Envoy or not, for the peers)"
)
ECHO_PROBE = "one echo message -> its echo (through the backend for wsfleet)"


@dataclass(frozen=True)
class Placement:
    """Where processes run: ``None`` means wherever the scheduler likes (no ``--pin``)."""

    clients: frozenset[int] | None = None
    servers: frozenset[int] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Placement:
        if not args.pin:
            return cls()
        return cls(frozenset({processes.CLIENT_CORE}), frozenset({processes.SERVER_CORE}))


@dataclass
class Target:
    name: str
    url: str
    processes: dict[str, psutil.Process]  # role -> process
    key_file: Path  # the handshake's token is signed with it (the bare servers ignore it)
    stop: Callable[[], Awaitable[None]] | None = None
    v1: bool = False  # speak protocol wsfleet.v1
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def pin(self, cores: frozenset[int] | None) -> None:
        if cores:
            for process in self.processes.values():
                processes.pin(process.pid, cores)

    def affinity(self) -> dict[str, list[int]]:
        return {role: processes.affinity(process.pid) for role, process in self.processes.items()}


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


async def wait_envoy_live(admin_port: int, child_running: Callable[[], bool]) -> None:
    """Until Envoy's admin ``/ready`` says LIVE (its static listeners then accept)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if not child_running():
                raise RuntimeError("envoy exited at start (see its log)")
            try:
                async with session.get(f"http://127.0.0.1:{admin_port}/ready") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"envoy did not report LIVE on /ready within {START_TIMEOUT_S:g} s")


async def start_envoy(
    supervisor: Supervisor, config: dict[str, Any], run_dir: Path, workers: int = 1
) -> psutil.Process:
    """Envoy from a static config (its admin port already set in it), once LIVE."""
    path = run_dir / "envoy.json"
    path.write_text(json.dumps(config))
    child = await supervisor.start(
        "envoy",
        [
            str(envoy_binary()),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            str(workers),
            "-l",
            "warning",
        ],
    )
    admin = int(config["admin"]["address"]["socket_address"]["port_value"])
    await wait_envoy_live(admin, lambda: child.running)
    return psutil.Process(child.pid)


async def start_bare(run_dir: Path, behind_envoy: bool, cores: frozenset[int] | None) -> Target:
    supervisor = Supervisor(run_dir / "logs")

    async def stop() -> None:
        await supervisor.stop_all(10)

    try:
        with processes.own_affinity(cores):
            ready = run_dir / "bare.ready.json"
            bare = await supervisor.start(
                "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
            )
            bare_port = int((await wait_ready(ready, START_TIMEOUT_S))["port"])
            roles = {"bare": psutil.Process(bare.pid)}
            url = f"ws://127.0.0.1:{bare_port}/ws"
            if behind_envoy:
                port, admin = free_port(), free_port()
                config = _static_envoy_config(port, bare_port, admin)
                roles["envoy"] = await start_envoy(supervisor, config, run_dir)
                url = f"ws://127.0.0.1:{port}/ws"
    except BaseException:
        await stop()
        raise
    # the same handshake request as wsfleet's, token included: like is compared with like
    key_file = ensure_auth_key(run_dir)
    target = Target("envoy+bare" if behind_envoy else "bare", url, roles, key_file, stop=stop)
    target.pin(cores)
    return target


async def start_wsfleet(
    run_dir: Path,
    name: str,
    policy: Path | None,
    concurrency: int,
    v1: bool,
    cores: frozenset[int] | None,
) -> Target:
    options = FleetOptions(
        sidecars=1,
        port=free_port(),
        admin_port=free_port(),
        policy_path=policy,
        state_dir=run_dir / "state",
        envoy_concurrency=concurrency,
        log_level="warning",
        broadcasters=("*",),  # the fan-out scenario's clients /broadcast
    )
    fleet = LocalFleet(options)
    with processes.own_affinity(cores):
        await fleet.start()  # stops what it started if it fails
    roles = {}
    for child in fleet.supervisor.children:
        if child.running:
            role = (
                child.name.split("-")[0]
                if child.name.startswith(("sidecar", "backend"))
                else child.name
            )
            roles[role] = psutil.Process(child.pid)
    target = Target(
        name, fleet.client_url, roles, fleet.state_dir / "auth.key", stop=fleet.stop, v1=v1
    )
    target.pin(cores)
    return target


async def _spawn(
    target: Target,
    count: int,
    rate: float,
    index: int,
    *,
    cores: frozenset[int] | None = None,
    prefix: str = "p",
    max_seconds: float = 300.0,
) -> asyncio.subprocess.Process:
    """A load generator holding ``count`` connections to ``target`` (see loadgen.py)."""
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
        f"{prefix}{index}",
        "--deadline-s",
        str(max_seconds),
        "--handshake-timeout",
        str(min(30.0, max_seconds)),
        "--idle-s",
        str(4 * max_seconds + 60),
    ]
    argv += ["--key-file", str(target.key_file)]
    if target.v1:  # protocol v1, as the SDKs speak it
        argv.append("--v1")
    return await processes.spawn(*argv, cores=cores)


async def _read(
    process: asyncio.subprocess.Process,
    event: str,
    progress: dict[int, int],
    index: int,
    timeout_s: float,
) -> dict[str, Any]:
    """The next ``event`` line of a load generator (progress lines are counted on the way)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = await asyncio.wait_for(process.stdout.readline(), remaining)
        except TimeoutError:
            break
        if not line:
            raise RuntimeError(
                f"load generator {index} exited (code {await process.wait()}) before '{event}'"
            )
        message: dict[str, Any] = json.loads(line)
        if message["event"] == "progress":
            progress[index] = message["open"]
            continue
        if message["event"] == event:
            return message
    raise TimeoutError(f"load generator {index} did not report '{event}' within {timeout_s:g} s")


async def _send(process: asyncio.subprocess.Process, **command: Any) -> None:
    assert process.stdin is not None
    process.stdin.write((json.dumps(command) + "\n").encode())
    await asyncio.wait_for(process.stdin.drain(), 10)


async def _close(generators: list[asyncio.subprocess.Process]) -> None:
    """Ask each load generator to close its connections and exit; kill it after a bound."""
    for g in generators:
        if g.returncode is None:
            try:
                await _send(g, cmd="close")
            except (ConnectionError, TimeoutError):
                g.kill()
    await asyncio.gather(*(processes.finish(g, 30) for g in generators))


def _usage(roles: dict[str, psutil.Process]) -> dict[str, tuple[float, float]]:
    """role -> (RSS MB, CPU seconds)"""
    usage = {}
    for role, process in roles.items():
        try:
            cpu = process.cpu_times()
            usage[role] = (process.memory_info().rss / 2**20, cpu.user + cpu.system)
        except psutil.NoSuchProcess:
            usage[role] = (0.0, 0.0)
    return usage


def _cpu(after: dict[str, tuple[float, float]], before: dict[str, tuple[float, float]]) -> float:
    """CPU seconds spent between two readings, all roles (to the ms: readings are ticks)."""
    return round(sum(after[role][1] - before[role][1] for role in after), 3)


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split over at most ``parts`` processes (none empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _open(
    target: Target,
    total: int,
    rate: float,
    args: argparse.Namespace,
    placement: Placement,
    progress: dict[int, int],
    prefix: str,
) -> tuple[list[asyncio.subprocess.Process], list[dict[str, Any]]]:
    """Start the load generators and wait until each has made its connections."""
    shares = _shares(total, args.clients)
    generators: list[asyncio.subprocess.Process] = []
    try:
        for i, share in enumerate(shares):
            generators.append(
                await _spawn(
                    target,
                    share,
                    rate / len(shares),
                    i,
                    cores=placement.clients,
                    prefix=prefix,
                    max_seconds=args.max_seconds,
                )
            )
        connected = await asyncio.gather(
            *(
                _read(g, "connected", progress, i, args.max_seconds + 30)
                for i, g in enumerate(generators)
            )
        )
    except BaseException:
        await _close(generators)
        raise
    for i, result in enumerate(connected):
        progress[i] = result["opened"]
    return generators, connected


def _errors(results: list[dict[str, Any]]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for result in results:
        for kind, n in result["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return errors


async def measure(target: Target, args: argparse.Namespace, placement: Placement) -> dict[str, Any]:
    await asyncio.sleep(args.settle)  # let start-up work (registration, xDS) finish
    base = _usage(target.processes)
    progress: dict[int, int] = {}
    started = time.monotonic()

    async def sample() -> None:
        while True:  # cancelled when the measurement ends
            target.timeline.append((time.monotonic() - started, sum(progress.values())))
            line = f"\r  {target.name:<12} {sum(progress.values()):>7} / {args.connections} open"
            sys.stderr.write(line)
            sys.stderr.flush()
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        generators, connected = await _open(
            target, args.connections, args.rate, args, placement, progress, "p"
        )
    finally:
        sampler.cancel()
        sys.stderr.write("\n")
    try:
        surge_s = time.monotonic() - started
        opened = sum(r["opened"] for r in connected)
        handshakes = [t for r in connected for t in r["handshake_s"]]
        # how busy the load generators' cores were: near 100 %, latencies include the
        # clients' own queueing, and hs/s is the clients' limit, not the server's
        client_cores = len(placement.clients) if placement.clients else os.cpu_count() or 1
        client_busy = sum(r["cpu_s"] for r in connected) / (
            max(r["seconds"] for r in connected) * client_cores
        )
        client_affinity = [processes.affinity(g.pid) for g in generators]
        await asyncio.sleep(args.hold)  # sustained
        held = _usage(target.processes)
        for g in generators:
            await _send(
                g,
                cmd="rtt",
                mode="echo",
                per_second=args.rtt_rate / len(generators),
                max_seconds=args.max_seconds,
            )
        rtt_results = await asyncio.gather(
            *(_read(g, "rtt", progress, i, args.max_seconds + 30) for i, g in enumerate(generators))
        )
        cpu_before = _usage(target.processes)
        for g in generators:
            await _send(
                g, cmd="throughput", messages=args.messages, size=64, max_seconds=args.max_seconds
            )
        throughput = await asyncio.gather(
            *(
                _read(g, "throughput", progress, i, args.max_seconds + 30)
                for i, g in enumerate(generators)
            )
        )
        cpu_after = _usage(target.processes)
        fanout = await _fanout(target, generators, progress, opened, args)
    finally:
        await _close(generators)
    received = sum(t["received"] for t in throughput)
    seconds = max(t["seconds"] for t in throughput)
    server_cpu = _cpu(cpu_after, cpu_before)
    # CPU of the surge, plus the hold (idle but for a round of heartbeats)
    surge_cpu = {r: round(held[r][1] - base[r][1], 3) for r in target.processes}
    message_cpu = {r: round(cpu_after[r][1] - cpu_before[r][1], 3) for r in target.processes}
    per_role_kb = {
        role: (held[role][0] - base[role][0]) * 1024 / max(1, opened) for role in target.processes
    }
    rtt = [t for r in rtt_results for t in r["rtt_s"]]
    return {
        "target": target.name,
        "protocol": "v1" if target.v1 else "raw",
        "connections": opened,
        "affinity": {"servers": target.affinity(), "load_generators": client_affinity},
        "surge": {
            "requested": args.connections,
            "rate_per_s": args.rate,
            "seconds": surge_s,
            "success": opened / args.connections,
            "handshakes_per_s": opened / surge_s,
            "latency_s": summary(handshakes),
            "client_cores_busy": client_busy,
            "errors": _errors(connected),
            "cpu_s": surge_cpu,
            "handshakes_per_cpu_s": {r: per(opened, c, MIN_CPU_S) for r, c in surge_cpu.items()},
        },
        "sustained": {
            "hold_s": args.hold,
            "rss_mb": {role: held[role][0] for role in target.processes},
            "kb_per_connection": per_role_kb,
            "kb_per_connection_total": sum(per_role_kb.values()),
        },
        "echo_rtt_probe": ECHO_PROBE,
        "echo_rtt_s": summary(rtt),
        "rtt_lost": sum(r["lost"] for r in rtt_results),
        "throughput": {
            "messages": received,
            "seconds": seconds,
            "messages_per_s": per(received, seconds),
            "server_cpu_s": server_cpu,
            "messages_per_cpu_s": per(received, server_cpu, MIN_CPU_S),
            "cpu_s": message_cpu,
            "messages_per_cpu_s_by_process": {
                r: per(received, c, MIN_CPU_S) for r, c in message_cpu.items()
            },
            # Redis keeps each v1 message in the session's replay buffer
            "rss_growth_bytes_per_message": {
                r: per((cpu_after[r][0] - held[r][0]) * 2**20, received, 1)
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
        await _send(g, cmd="fanout", messages=args.fanout, send=i == 0, deadline_s=args.max_seconds)
    results = await asyncio.gather(
        *(_read(g, "fanout", progress, i, args.max_seconds + 30) for i, g in enumerate(generators))
    )
    after = _usage(target.processes)
    delivered = sum(r["received"] for r in results)
    seconds = max(r["last"] for r in results) - started if delivered else 0.0
    cpu = _cpu(after, before)
    return {
        "broadcasts": args.fanout,
        "expected": args.fanout * opened,
        "delivered": delivered,
        "seconds": seconds,
        "deliveries_per_s": per(delivered, seconds),
        "server_cpu_s": cpu,
        "deliveries_per_cpu_s": per(delivered, cpu, MIN_CPU_S),
        "cpu_s": {r: round(after[r][1] - before[r][1], 3) for r in target.processes},
    }


async def keepalive(
    target: Target, args: argparse.Namespace, placement: Placement
) -> dict[str, Any]:
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
    generators, connected = await _open(
        target, args.keepalive_held, args.rate, args, placement, progress, "k"
    )
    try:
        before = _usage(target.processes)
        for g in generators:
            await _send(
                g,
                cmd="keepalive",
                rate=args.keepalive_rate / len(generators),
                seconds=args.keepalive_seconds,
                ping_per_second=args.keepalive_ping_rate / len(generators),
                size=64,
            )
        results = await asyncio.gather(
            *(
                _read(g, "keepalive", progress, i, args.keepalive_seconds + 60)
                for i, g in enumerate(generators)
            )
        )
        after = _usage(target.processes)
    finally:
        await _close(generators)
    seconds = max(r["seconds"] for r in results)
    cpu = _cpu(after, before)
    received = sum(r["echo_received"] for r in results)
    figures.update(
        {
            "held": sum(r["opened"] for r in connected),
            "connect_errors": _errors(connected),
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


def _plots(results: list[dict[str, Any]], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        xs, ys = zip(*result["timeline"], strict=True) if result["timeline"] else ((), ())
        axis.plot(xs, ys, label=result["target"])
    axis.set(xlabel="seconds", ylabel="open connections", title="connections over time (surge)")
    axis.legend()
    path = directory / "load-connections.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    figure, axis = plt.subplots(figsize=(7, 4))
    names = [r["target"] for r in results]
    for offset, key in enumerate(("p50", "p99", "max")):
        axis.bar(
            [i + offset * 0.27 for i in range(len(names))],
            [ms(r["echo_rtt_s"][key]) or 0.0 for r in results],
            width=0.27,
            label=key,
        )
    axis.set_xticks([i + 0.27 for i in range(len(names))], names)
    axis.set(ylabel="ms", title="echo round trip with every connection held")
    axis.set_yscale("log")
    axis.legend()
    path = directory / "load-rtt.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    plt.close("all")
    return paths


# figure -> (where it is in a result row, the smallest denominator that is a measurement)
RATIO_FIGURES: dict[str, tuple[tuple[str, ...], float]] = {
    "kb_per_connection": (("sustained", "kb_per_connection_total"), 0.01),
    "handshakes_per_s": (("surge", "handshakes_per_s"), 1e-6),
    "echo_rtt_p50": (("echo_rtt_s", "p50"), 1e-6),
    "echo_rtt_p99": (("echo_rtt_s", "p99"), 1e-6),
    "messages_per_s": (("throughput", "messages_per_s"), 1e-6),
    "messages_per_cpu_s": (("throughput", "messages_per_cpu_s"), 1e-6),
    "fanout_deliveries_per_s": (("fanout", "deliveries_per_s"), 1e-6),
    "fanout_deliveries_per_cpu_s": (("fanout", "deliveries_per_cpu_s"), 1e-6),
    "keepalive_ping_rtt_p50": (("keepalive", "ping_rtt_s", "p50"), 1e-6),
    "keepalive_ping_rtt_p99": (("keepalive", "ping_rtt_s", "p99"), 1e-6),
}


def _dig(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """wsfleet row -> peer -> figure -> ratio (None: n/a)."""
    by_name = {r["target"]: r for r in results}
    return {
        ours["target"]: {
            peer: {
                figure: ratio(_dig(ours, path), _dig(by_name.get(peer, {}), path), tiny)
                for figure, (path, tiny) in RATIO_FIGURES.items()
            }
            for peer in PEERS
        }
        for ours in results
        if ours["target"].startswith("wsfleet")
    }


def _readable(results: list[dict[str, Any]], by_row: dict[str, Any], pinned: bool) -> str:
    rows = [
        (
            r["target"],
            r["connections"],
            f"{r['surge']['success']:.2%}",
            r["surge"]["handshakes_per_s"],
            ms(r["surge"]["latency_s"]["p99"]),
            f"{r['surge']['client_cores_busy']:.0%}",
            sum(r["surge"]["errors"].values()),
            r["sustained"]["kb_per_connection_total"],
            ", ".join(f"{k} {v:.1f}" for k, v in r["sustained"]["kb_per_connection"].items()),
            ms(r["echo_rtt_s"]["p50"]),
            ms(r["echo_rtt_s"]["p99"]),
            r["throughput"]["messages_per_s"],
            r["throughput"]["messages_per_cpu_s"],
            f"{r['fanout']['delivered']}/{r['fanout']['expected']}",
            r["fanout"]["deliveries_per_s"],
            r["fanout"]["deliveries_per_cpu_s"],
        )
        for r in results
    ]
    text = table(
        rows,
        [
            "target",
            "conns",
            "surge ok",
            "hs/s",
            "hs p99 ms",
            "clients busy",
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
    keep = [r for r in results if r["keepalive"].get("held") is not None]
    if keep:
        text += (
            "\n\nkeep-alive: "
            + PING_PROBE
            + "\n"
            + table(
                [
                    (
                        r["target"],
                        f"{r['keepalive']['open_at_end']}/{r['keepalive']['held_requested']}",
                        r["keepalive"]["rate_per_s"],
                        r["keepalive"]["echo_per_s"],
                        ms(r["keepalive"]["ping_rtt_s"]["p50"]),
                        ms(r["keepalive"]["ping_rtt_s"]["p99"]),
                        r["keepalive"]["pings_lost"],
                        ms(r["keepalive"]["echo_rtt_s"]["p50"]),
                        ms(r["keepalive"]["echo_rtt_s"]["p99"]),
                        r["keepalive"]["server_cores_busy"],
                    )
                    for r in keep
                ],
                [
                    "target",
                    "held",
                    "echo msg/s asked",
                    "echo msg/s got",
                    "ping p50 ms",
                    "ping p99 ms",
                    "pings lost",
                    "echo p50 ms",
                    "echo p99 ms",
                    "server cores busy",
                ],
            )
        )
    columns = [(row, peer) for row in by_row for peer in PEERS]
    text += "\n\n" + table(
        [
            (figure, *(fmt_ratio(by_row[row][peer][figure]) for row, peer in columns))
            for figure in RATIO_FIGURES
        ],
        ["ratio", *(f"{row} / {peer}" for row, peer in columns)],
    )
    text += "\n(n/a: nothing measurable to divide by at this size)"
    text += f"\npinned: {'load generators on core 0, servers on core 1' if pinned else 'no'}"
    return text


async def main(args: argparse.Namespace) -> None:
    placement = Placement.from_args(args)
    if args.pin:
        processes.check_pinning()
    results = []
    variants: list[tuple[str, Path | None, int, bool]] = [
        ("wsfleet raw", None, 1, False),
        ("wsfleet v1", None, 1, True),
    ]
    with (
        processes.own_affinity(placement.clients),
        tempfile.TemporaryDirectory(prefix="wsfleet-load-") as tmp,
    ):
        if args.envoy_variants:
            defaults = Path(tmp) / "envoy-defaults.yaml"
            defaults.write_text(ENVOY_DEFAULT_BUFFERS)
            variants.append(("wsfleet v1/envoy-defaults", defaults, 1, True))
            variants.append(("wsfleet v1/2-workers", None, 2, True))
        plan = [*variants, ("envoy+bare", None, 1, False), ("bare", None, 1, False)]
        for name, policy, concurrency, v1 in plan:
            run_dir = Path(tmp) / name.replace("/", "-").replace(" ", "-").replace("+", "-")
            if name.startswith("wsfleet"):
                target = await start_wsfleet(
                    run_dir, name, policy, concurrency, v1, placement.servers
                )
            else:
                target = await start_bare(run_dir, name == "envoy+bare", placement.servers)
            try:
                result = await measure(target, args, placement)
                result["keepalive"] = await keepalive(target, args, placement)
                results.append(result)
            finally:
                assert target.stop is not None
                await target.stop()
    by_row = ratios(results)
    readable = _readable(results, by_row, args.pin)
    plots = _plots(results, args.output_dir)
    readable += "\nplots: " + ", ".join(str(p) for p in plots)
    by_name = {r["target"]: r for r in results}
    publish(
        "load",
        {
            "pinned": args.pin,
            "cores": {
                "load_generators": sorted(placement.clients) if placement.clients else None,
                "servers": sorted(placement.servers) if placement.servers else None,
            },
            "options": {
                key: getattr(args, key)
                for key in (
                    "connections",
                    "rate",
                    "clients",
                    "hold",
                    "rtt_rate",
                    "messages",
                    "fanout",
                    "keepalive_held",
                    "keepalive_rate",
                    "keepalive_seconds",
                    "keepalive_ping_rate",
                )
            },
            "results": results,
            "ratios": by_row,
            "measured": measured(by_name["wsfleet v1"]),
        },
        readable,
        args.output_dir,
    )


def measured(ours: dict[str, Any]) -> dict[str, float]:
    """The capacity model's inputs (wsfleet_tools.capacity.Measured) from wsfleet v1's run (as the
    SDKs speak); a figure that is n/a at this size is left out (the model keeps its own)."""
    kb = ours["sustained"]["kb_per_connection"]
    handshakes = ours["surge"]["handshakes_per_cpu_s"]
    messages = ours["throughput"]["messages_per_cpu_s_by_process"]
    redis_messages = messages.get("redis")
    figures = {
        "sidecar_kb_per_connection": kb.get("sidecar"),
        "envoy_kb_per_connection": kb.get("envoy"),
        "redis_bytes_per_connection": kb["redis"] * 1024 if "redis" in kb else None,
        "sidecar_handshakes_per_s": handshakes.get("sidecar"),
        "envoy_handshakes_per_s_per_worker": handshakes.get("envoy"),
        "sidecar_messages_per_s": messages.get("sidecar"),
        "redis_bytes_per_replayed_message": ours["throughput"]["rss_growth_bytes_per_message"].get(
            "redis"
        ),
        # an echo costs Redis 6 pipelined commands: the client's message (HSET last_cseq,
        # PEXPIRE) and the reply (XADD to the replay buffer, HSET last_seq, 2 PEXPIRE)
        "redis_ops_per_s_per_core": redis_messages * 6 if redis_messages is not None else None,
    }
    return {key: value for key, value in figures.items() if value is not None}


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


SMOKE: dict[str, Any] = {
    "connections": 40,
    "rate": 400.0,
    "clients": 2,
    "hold": 0.5,
    "rtt_rate": 400.0,
    "messages": 100,  # 4,000 echoes: enough server CPU for wsfleet's per-CPU-second figures
    "fanout": 10,
    "settle": 0.5,
    "keepalive_held": 40,
    "keepalive_rate": 100.0,
    "keepalive_seconds": 2.0,
    "keepalive_ping_rate": 100.0,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=positive_int, default=8000)
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=1000.0,
        help="handshakes/s, all clients (0: as fast as the clients can, a true surge)",
    )
    parser.add_argument(
        "--clients", type=positive_int, default=4, help="load-generator processes (at most 250)"
    )
    parser.add_argument(
        "--hold", type=non_negative_float, default=10.0, help="seconds held before measuring"
    )
    parser.add_argument(
        "--rtt-rate", type=positive_float, default=4000.0, help="echo probes/s, all clients"
    )
    parser.add_argument(
        "--messages", type=positive_int, default=5, help="echo messages per connection"
    )
    parser.add_argument(
        "--fanout", type=positive_int, default=5, help="broadcasts to every connection"
    )
    parser.add_argument(
        "--settle",
        type=non_negative_float,
        default=2.0,
        help="seconds between a target's start and its first measurement",
    )
    parser.add_argument(
        "--keepalive-held",
        type=non_negative_int,
        default=4000,
        help="keep-alive: connections held (0: no keep-alive scenario)",
    )
    parser.add_argument(
        "--keepalive-rate",
        type=non_negative_float,
        default=1000.0,
        help="keep-alive: background echo messages/s, spread over the held connections",
    )
    parser.add_argument(
        "--keepalive-seconds", type=positive_float, default=10.0, help="keep-alive: how long"
    )
    parser.add_argument(
        "--keepalive-ping-rate",
        type=positive_float,
        default=200.0,
        help="keep-alive: WebSocket pings/s (one connection after another), all clients",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on every phase"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="load generators on core 0, every server-side process on core 1",
    )
    parser.add_argument(
        "--envoy-variants",
        action="store_true",
        help="also wsfleet v1 with Envoy's defaults (over xDS) and with 2 Envoy workers",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.pin:
        try:
            processes.check_pinning()
        except SystemExit as refused:
            return str(refused)
    if args.clients > 250:
        return f"--clients {args.clients}: at most 250 (one source address 127.0.0.N each)"
    if args.clients > args.connections:
        return f"--clients {args.clients} is more than --connections {args.connections}"
    return None
