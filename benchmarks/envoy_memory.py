"""Envoy's memory per upgraded connection, idle and after traffic, under each setting.

Envoy (one worker unless said) proxies N WebSockets to the bare aiohttp echo server, once
per variant, all in one run: the baseline is the listener, routes and cluster wsfleet's
xDS builds for the default policy (inlined as in ``envoy-share``: same resources, no ADS),
and every other variant changes one thing on top of it: the per-connection buffer limit
(listener and cluster), the access log, stats (a stats matcher rejecting all), the HTTP/1
codec (legacy parser, smaller header limit), upstream ``max_requests_per_connection``,
idle timers (all, or one at a time: the stream's, the downstream and upstream
connections'), the overload manager's ``shrink_heap`` action, tcmalloc's periodic release
(bootstrap ``memory_allocator_manager``) and a second worker (``--concurrency 2``).

For each, with N held: RSS, and from Envoy's ``/memory`` tcmalloc's ``allocated`` (live
objects), ``heap_size`` and ``pageheap_free`` (memory the allocator keeps but nothing
uses), each per connection against the same Envoy before the connections: once idle, and
again after every connection has echoed ``--messages`` messages of ``--size`` bytes. The
ratios are to the baseline of the same run (memory is robust to a busy machine; the
seconds it takes are not).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.envoy_share import (
    WSFLEET,
    Config,
    _buffers,
    _hcm,
    _legacy_parser,
    _memory,
    _no_idle_timers,
    _route,
    variant_config,
)
from benchmarks.load.envoy_static import start_envoy
from benchmarks.load.generators import close, open_connections, read_event, send, shares
from benchmarks.load.targets import Placement, Target
from benchmarks.report import fmt_ratio, publish, ratio, table
from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet.readiness import wait_ready
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.ports import free_port

FIXED_HEAP = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
MEMORY_FIELDS = ("allocated", "heap_size", "pageheap_free")


def _no_access_log(config: Config) -> None:
    _hcm(config).pop("access_log", None)


def _no_stats(config: Config) -> None:
    config["stats_config"] = {"stats_matcher": {"reject_all": True}}


def _small_headers(config: Config) -> None:
    _hcm(config)["max_request_headers_kb"] = 8


def _upstream_http_options(config: Config) -> Config:
    """The common HTTP options of the one cluster's connections (to the bare server)."""
    [pool] = config["static_resources"]["clusters"]
    [options] = pool["typed_extension_protocol_options"].values()
    return options["common_http_protocol_options"]  # type: ignore[no-any-return]


def _one_request_per_upstream(config: Config) -> None:
    _upstream_http_options(config)["max_requests_per_connection"] = 1


def _stream_idle_timer(config: Config) -> None:
    """A stream idle timer on the WebSocket route (Envoy's 5 min; wsfleet sets none)."""
    _route(config)["route"]["idle_timeout"] = "300s"


def _no_connection_idle_timer(config: Config) -> None:
    _hcm(config)["common_http_protocol_options"] = {"idle_timeout": "0s"}


def _no_upstream_idle_timer(config: Config) -> None:
    _upstream_http_options(config)["idle_timeout"] = "0s"


def _shrink_heap(config: Config) -> None:
    """The overload manager's ``shrink_heap`` always on: a heap limit of 1 GiB, triggered
    at 1 % of it (Envoy then returns free pages to the system every 10 s)."""
    monitor = "envoy.resource_monitors.fixed_heap"
    config["overload_manager"] = {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {"name": monitor, "typed_config": {"@type": FIXED_HEAP, "max_heap_size_bytes": 1 << 30}}
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": monitor, "threshold": {"value": 0.01}}],
            }
        ],
    }


def _release_memory(config: Config) -> None:
    """tcmalloc returns up to 64 MiB of free pages to the system every second."""
    config["memory_allocator_manager"] = {
        "bytes_to_release": 64 << 20,
        "memory_release_interval": "1s",
    }


# name, changes applied on top of the static Envoy -> bare config, Envoy workers
VARIANTS: list[tuple[str, list[Callable[[Config], None]], int]] = [
    ("wsfleet (baseline)", WSFLEET, 1),
    ("buffers 1 MiB (Envoy's default)", [*WSFLEET, _buffers(1 << 20)], 1),
    ("buffers 4 KiB", [*WSFLEET, _buffers(4096)], 1),
    ("no access log", [*WSFLEET, _no_access_log], 1),
    ("no stats (reject_all)", [*WSFLEET, _no_stats], 1),
    ("legacy HTTP/1 parser", [*WSFLEET, _legacy_parser], 1),
    ("max_request_headers_kb 8", [*WSFLEET, _small_headers], 1),
    ("upstream 1 request/conn", [*WSFLEET, _one_request_per_upstream], 1),
    ("no idle timers", [*WSFLEET, _no_idle_timers], 1),
    ("stream idle timer 300 s", [*WSFLEET, _stream_idle_timer], 1),
    ("no connection idle timer", [*WSFLEET, _no_connection_idle_timer], 1),
    ("no upstream idle timer", [*WSFLEET, _no_upstream_idle_timer], 1),
    ("overload shrink_heap", [*WSFLEET, _shrink_heap], 1),
    ("tcmalloc release 1 s", [*WSFLEET, _release_memory], 1),
    ("2 workers", WSFLEET, 2),
]


def _reading(process: psutil.Process, admin_port: int) -> dict[str, int]:
    memory = _memory(admin_port)
    return {"rss": process.memory_info().rss, **{key: memory[key] for key in MEMORY_FIELDS}}


def _per_connection(after: dict[str, int], before: dict[str, int], held: int) -> dict[str, Any]:
    """KB per connection of every reading (None when nothing was held; a reading may
    shrink: memory the allocator returned)."""
    return {
        f"{key}_kb": round((after[key] - before[key]) / 1024 / held, 2) if held else None
        for key in ("rss", *MEMORY_FIELDS)
    }


async def _traffic(
    generators: list[asyncio.subprocess.Process], args: argparse.Namespace
) -> tuple[int, int]:
    """Every connection echoes ``--messages`` of ``--size`` bytes: (sent, received)."""
    for g in generators:
        await send(
            g,
            cmd="throughput",
            messages=args.messages,
            size=args.size,
            max_seconds=args.max_seconds,
        )
    progress: dict[int, int] = {}
    results = await asyncio.gather(
        *(
            read_event(g, "throughput", progress, i, args.max_seconds + 30)
            for i, g in enumerate(generators)
        )
    )
    return sum(r["sent"] for r in results), sum(r["received"] for r in results)


async def measure(
    name: str, config: Config, workers: int, run_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    config = copy.deepcopy(config)
    port, admin = free_port(), free_port()
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    supervisor = Supervisor(run_dir / "logs")
    generators: list[asyncio.subprocess.Process] = []
    try:
        process = await start_envoy(supervisor, config, run_dir, workers)
        await asyncio.sleep(args.settle)
        before = await asyncio.to_thread(_reading, process, admin)
        target = Target(name, f"ws://127.0.0.1:{port}/ws", {}, ensure_auth_key(run_dir))
        per_process = args.rate * len(shares(args.connections, args.clients))  # --rate: each
        generators, opened_by = await open_connections(
            target, args.connections, per_process, args, Placement(), {}, "p"
        )
        held = sum(r["opened"] for r in opened_by)
        await asyncio.sleep(args.hold)
        idle = await asyncio.to_thread(_reading, process, admin)
        sent, received = await _traffic(generators, args)
        await asyncio.sleep(args.hold)
        busy = await asyncio.to_thread(_reading, process, admin)
        return {
            "variant": name,
            "workers": workers,
            "connections": held,
            "errors": sum(sum(r["errors"].values()) for r in opened_by),
            "messages_sent": sent,
            "messages_echoed": received,
            "baseline_mb": {key: value / 2**20 for key, value in before.items()},
            "idle": _per_connection(idle, before, held),
            "after_traffic": _per_connection(busy, before, held),
        }
    finally:
        await close(generators)
        await supervisor.stop_all(10)


def _readable(rows: list[dict[str, Any]]) -> str:
    return table(
        [
            (
                r["variant"],
                r["workers"],
                r["connections"],
                r["idle"]["rss_kb"],
                r["idle"]["allocated_kb"],
                r["idle"]["heap_size_kb"],
                r["idle"]["pageheap_free_kb"],
                r["after_traffic"]["rss_kb"],
                r["after_traffic"]["allocated_kb"],
                fmt_ratio(r["idle_rss_vs_baseline"]),
                fmt_ratio(r["after_traffic_rss_vs_baseline"]),
            )
            for r in rows
        ],
        [
            "Envoy variant",
            "workers",
            "conns",
            "idle RSS KB/conn",
            "allocated",
            "heap",
            "pageheap free",
            "after traffic RSS",
            "allocated",
            "idle RSS vs baseline",
            "after traffic",
        ],
    )


async def main(args: argparse.Namespace) -> None:
    chosen = [v for v in VARIANTS if args.only is None or v[0] in args.only or v is VARIANTS[0]]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-envoy-memory-") as tmp:
        supervisor = Supervisor(Path(tmp) / "logs")
        ready = Path(tmp) / "bare.ready.json"
        await supervisor.start(
            "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
        )
        try:
            bare_port = int((await wait_ready(ready, 30.0))["port"])
            for index, (name, changes, workers) in enumerate(chosen):
                started = time.monotonic()
                run_dir = Path(tmp) / f"v{index}"
                run_dir.mkdir()
                row = await measure(
                    name, variant_config(bare_port, changes), workers, run_dir, args
                )
                rows.append(row)
                sys.stderr.write(
                    f"  {name:<32} idle {row['idle']['rss_kb']} KB/conn, after traffic"
                    f" {row['after_traffic']['rss_kb']}  ({time.monotonic() - started:.0f} s)\n"
                )
        finally:
            await supervisor.stop_all(10)
    baseline = rows[0]
    for row in rows:
        for phase in ("idle", "after_traffic"):
            row[f"{phase}_rss_vs_baseline"] = ratio(
                row[phase]["rss_kb"], baseline[phase]["rss_kb"], 0.01
            )
            row[f"{phase}_allocated_vs_baseline"] = ratio(
                row[phase]["allocated_kb"], baseline[phase]["allocated_kb"], 0.01
            )
    options = {
        key: getattr(args, key)
        for key in ("connections", "clients", "rate", "messages", "size", "hold", "settle")
    }
    publish(
        "envoy-memory", {"options": options, "variants": rows}, _readable(rows), args.output_dir
    )


SMOKE: dict[str, Any] = {
    "connections": 30,
    "clients": 1,
    "rate": 400.0,
    "messages": 2,
    "size": 256,
    "hold": 0.3,
    "settle": 0.3,
    "max_seconds": 60.0,
    "only": ["buffers 4 KiB"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=positive_int, default=3000)
    parser.add_argument(
        "--clients", type=positive_int, default=2, help="load-generator processes (at most 250)"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=1000.0, help="handshakes/s per process"
    )
    parser.add_argument(
        "--messages", type=positive_int, default=5, help="echoed per connection (traffic phase)"
    )
    parser.add_argument("--size", type=positive_int, default=4096, help="bytes per message")
    parser.add_argument(
        "--hold", type=non_negative_float, default=3.0, help="seconds held before each reading"
    )
    parser.add_argument(
        "--settle",
        type=non_negative_float,
        default=1.5,
        help="seconds between Envoy being LIVE and its baseline memory",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=120.0, help="a bound on every phase"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="VARIANT",
        help="measure only these variants (and the baseline); names: "
        + "; ".join(name for name, _, _ in VARIANTS),
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.clients > 250:
        return f"--clients {args.clients}: at most 250 (one source address 127.0.0.N each)"
    if args.clients > args.connections:
        return f"--clients {args.clients} is more than --connections {args.connections}"
    unknown = set(args.only or ()) - {name for name, _, _ in VARIANTS}
    if unknown:
        return f"--only: unknown variant(s) {', '.join(sorted(unknown))}"
    return None
