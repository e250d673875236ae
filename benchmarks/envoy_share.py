"""Which Envoy settings change its memory per proxied idle WebSocket? One run, same load.

Envoy (one worker unless said) proxies N idle WebSockets to the bare aiohttp echo server,
once per variant: a plain HTTP proxy with Envoy's defaults (1 MiB buffer limits, request
ids); the listener, routes and cluster that wsfleet's xDS builds for the default policy
(inlined into a static config: same resources, no ADS), and the same without each feature
that costs per stream (route retries, the upgrade rate-limit filter) or with request ids;
then further knobs on top (4 KiB buffers, no idle timers, the legacy HTTP/1 parser, two
workers), and last an L4 ``tcp_proxy`` as the floor (no
HTTP routing, so no hashing on the user id: a reference, not an option). For each: RSS
per connection and tcmalloc's live ``allocated`` bytes per connection (from Envoy's
``/memory``), so memory the allocator merely keeps is told apart from memory in use.

The xDS-delivered before/after through the whole fleet is ``load --envoy-variants``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.load.envoy_static import start_envoy, static_envoy_config
from benchmarks.load.generators import close, open_connections, shares
from benchmarks.load.targets import Placement, Target
from benchmarks.report import fmt_ratio, per, publish, ratio, table
from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet.readiness import wait_ready
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.ports import free_port
from xds_server import builders
from xds_server.policy_loader import default_policy_text, parse_policy

Config = dict[str, Any]
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def _hcm(config: Config) -> Config:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][  # type: ignore[no-any-return]
        "typed_config"
    ]


def _buffers(size: int) -> Callable[[Config], None]:
    def apply(config: Config) -> None:
        config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = size
        config["static_resources"]["clusters"][0]["per_connection_buffer_limit_bytes"] = size

    return apply


def _request_ids(on: bool) -> Callable[[Config], None]:
    def apply(config: Config) -> None:
        _hcm(config)["generate_request_id"] = on

    return apply


def _no_idle_timers(config: Config) -> None:
    hcm = _hcm(config)
    hcm["stream_idle_timeout"] = "0s"
    hcm["request_timeout"] = "0s"
    hcm["common_http_protocol_options"] = {"idle_timeout": "0s"}


def _legacy_parser(config: Config) -> None:
    _hcm(config)["http_protocol_options"] = {"use_balsa_parser": False}


def _wsfleet_resources(config: Config) -> None:
    """The listener, routes and cluster wsfleet's xDS serves for the default policy, inlined
    (routes instead of RDS, the bare server as the one static endpoint)."""
    policy = parse_policy(default_policy_text())
    item = policy.listeners[0]
    listener = config["static_resources"]["listeners"][0]
    generated = builders.listener(item)
    hcm = generated["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["rds"]
    routes = builders.route_configuration(item, policy)
    gateways = policy.pools[0].name
    for virtual_host in routes["virtual_hosts"]:  # the gateways' routes (not the server API's)
        virtual_host["routes"] = [
            r for r in virtual_host["routes"] if r["route"]["cluster"] == gateways
        ]
    hcm["route_config"] = routes
    listener["filter_chains"] = generated["filter_chains"]
    listener["per_connection_buffer_limit_bytes"] = generated["per_connection_buffer_limit_bytes"]
    [static] = config["static_resources"]["clusters"]
    pool = builders.cluster(policy.pools[0])
    del pool["eds_cluster_config"]
    pool.update(
        type="STATIC", load_assignment={**static["load_assignment"], "cluster_name": pool["name"]}
    )
    config["static_resources"]["clusters"] = [pool]


def _route(config: Config) -> Config:
    virtual_host = _hcm(config)["route_config"]["virtual_hosts"][0]
    [route] = [r for r in virtual_host["routes"] if r["name"] == "websocket"]
    return route  # type: ignore[no-any-return]


def _no_retries(config: Config) -> None:
    del _route(config)["route"]["retry_policy"]


def _no_rate_limit_filter(config: Config) -> None:
    hcm = _hcm(config)
    hcm["http_filters"] = [
        f for f in hcm["http_filters"] if f["name"] != builders.RATE_LIMIT_FILTER
    ]
    _route(config).pop("typed_per_filter_config", None)


def _tcp_proxy(config: Config) -> None:
    listener = config["static_resources"]["listeners"][0]
    listener["filter_chains"] = [
        {
            "filters": [
                {
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {"@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": "bare"},
                }
            ]
        }
    ]


WSFLEET: list[Callable[[Config], None]] = [_wsfleet_resources]  # what xDS delivers by default
FEWER_BUFFERS = [*WSFLEET, _buffers(4096)]
NO_TIMERS = [*FEWER_BUFFERS, _no_idle_timers]

# name, changes applied to the static Envoy -> bare config, Envoy workers
VARIANTS: list[tuple[str, list[Callable[[Config], None]], int]] = [
    ("envoy defaults", [_buffers(1 << 20), _request_ids(True)], 1),
    ("wsfleet (xDS resources)", WSFLEET, 1),
    ("  without route retries", [*WSFLEET, _no_retries], 1),
    ("  without rate-limit filter", [*WSFLEET, _no_rate_limit_filter], 1),
    ("  with request ids", [*WSFLEET, _request_ids(True)], 1),
    ("+ 4 KiB buffers", FEWER_BUFFERS, 1),
    ("+ no idle timers", NO_TIMERS, 1),
    ("+ legacy parser", [*NO_TIMERS, _legacy_parser], 1),
    ("wsfleet, 2 workers", WSFLEET, 2),
    ("tcp_proxy (L4 floor)", [_tcp_proxy], 1),
]


def variant_config(bare_port: int, changes: list[Callable[[Config], None]]) -> Config:
    config = static_envoy_config(0, bare_port, 0)
    for change in changes:
        change(config)
    return config


def _memory(admin_port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/memory", timeout=5) as answer:
        raw = json.loads(answer.read())
    return {key: int(value) for key, value in raw.items() if str(value).isdigit()}


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
        rss_before = process.memory_info().rss
        memory_before = await asyncio.to_thread(_memory, admin)
        target = Target(name, f"ws://127.0.0.1:{port}/ws", {}, ensure_auth_key(run_dir))
        per_process = args.rate * len(shares(args.connections, args.clients))  # --rate: each
        generators, results = await open_connections(
            target, args.connections, per_process, args, Placement(), {}, "p"
        )
        await asyncio.sleep(args.hold)
        opened = sum(r["opened"] for r in results)
        rss = process.memory_info().rss
        memory = await asyncio.to_thread(_memory, admin)
        return {
            "variant": name,
            "workers": workers,
            "connections": opened,
            "errors": sum(sum(r["errors"].values()) for r in results),
            "rss_kb_per_connection": per((rss - rss_before) / 1024, opened, 1),
            "allocated_kb_per_connection": per(
                (memory["allocated"] - memory_before["allocated"]) / 1024, opened, 1
            ),
            "heap_kb_per_connection": per(
                (memory["heap_size"] - memory_before["heap_size"]) / 1024, opened, 1
            ),
        }
    finally:
        await close(generators)
        await supervisor.stop_all(10)


async def main(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-envoy-share-") as tmp:
        supervisor = Supervisor(Path(tmp) / "logs")
        ready = Path(tmp) / "bare.ready.json"
        await supervisor.start(
            "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
        )
        try:
            bare_port = int((await wait_ready(ready, 30.0))["port"])
            for index, (name, changes, workers) in enumerate(VARIANTS):
                config = variant_config(bare_port, changes)
                started = time.monotonic()
                run_dir = Path(tmp) / f"v{index}"
                run_dir.mkdir()
                rows.append(await measure(name, config, workers, run_dir, args))
                kb = rows[-1]["rss_kb_per_connection"]
                sys.stderr.write(
                    f"  {name:<27} {'n/a' if kb is None else f'{kb:6.1f}'} KB/conn"
                    f"  ({time.monotonic() - started:.0f} s)\n"
                )
        finally:
            await supervisor.stop_all(10)
    before = rows[0]["rss_kb_per_connection"]
    for row in rows:
        row["vs_envoy_defaults"] = ratio(row["rss_kb_per_connection"], before, 0.01)
    readable = table(
        [
            (
                r["variant"],
                r["workers"],
                r["connections"],
                r["rss_kb_per_connection"],
                r["allocated_kb_per_connection"],
                fmt_ratio(r["vs_envoy_defaults"]),
            )
            for r in rows
        ],
        ["Envoy variant", "workers", "conns", "RSS KB/conn", "allocated KB/conn", "vs defaults"],
    )
    publish(
        "envoy-share",
        {"connections": args.connections, "variants": rows},
        readable,
        args.output_dir,
    )


SMOKE: dict[str, Any] = {
    "connections": 40,
    "clients": 1,
    "rate": 400.0,
    "hold": 0.3,
    "settle": 0.3,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=positive_int, default=4000)
    parser.add_argument(
        "--clients", type=positive_int, default=2, help="load-generator processes (at most 250)"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=1000.0, help="handshakes/s per process"
    )
    parser.add_argument(
        "--hold", type=non_negative_float, default=3.0, help="seconds held before measuring"
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


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.clients > 250:
        return f"--clients {args.clients}: at most 250 (one source address 127.0.0.N each)"
    if args.clients > args.connections:
        return f"--clients {args.clients} is more than --connections {args.connections}"
    return None
