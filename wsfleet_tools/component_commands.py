"""Commands that run one part of a fleet in the foreground: ``wsfleet backend`` (the demo
echo backend), ``wsfleet envoy`` (Envoy with a bootstrap for an xDS server) and
``wsfleet faultproxy`` (loss, latency, jitter or a blackhole before a loopback port)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from wsfleet.arg_types import non_negative_float, port, positive_int
from wsfleet.settings import BackendSettings
from wsfleet.settings_flags import add_flags, from_args


def register_backend(commands: argparse._SubParsersAction[Any]) -> None:
    backend = commands.add_parser("backend", help="run the demo echo backend")
    add_flags(backend, BackendSettings)
    backend.set_defaults(run=run_backend)


def register_envoy(commands: argparse._SubParsersAction[Any]) -> None:
    envoy = commands.add_parser(
        "envoy", help="run Envoy with a bootstrap pointing at an xDS server"
    )
    envoy.add_argument("--xds-host", default="127.0.0.1")
    envoy.add_argument("--xds-port", type=port, default=18000)
    envoy.add_argument("--node-id", default="envoy-1")
    envoy.add_argument("--node-cluster", default="wsfleet")
    envoy.add_argument("--admin-host", default="127.0.0.1")
    envoy.add_argument("--admin-port", type=port, default=9901)
    envoy.add_argument(
        "--stats-host",
        default="0.0.0.0",
        help="address of the stats listener: GET /stats/prometheus only (default 0.0.0.0)",
    )
    envoy.add_argument(
        "--stats-port",
        type=port,
        default=9902,
        help="port of the stats listener, for Prometheus; the admin API stays on "
        "--admin-host (default 9902)",
    )
    envoy.add_argument("--delta", action="store_true", help="Delta ADS instead of SotW")
    envoy.add_argument("--concurrency", type=positive_int, default=1)
    envoy.add_argument("--region", default="local", help="this Envoy's locality region")
    envoy.add_argument(
        "--tls-dir",
        type=Path,
        help="reach xDS over mutual TLS with the fleet CA's files in this directory "
        "(node-<node id>.crt/.key and fleet-ca.crt, made by wsfleet keygen)",
    )
    envoy.set_defaults(run=exec_envoy)


def register_faultproxy(commands: argparse._SubParsersAction[Any]) -> None:
    faultproxy = commands.add_parser(
        "faultproxy",
        help="a user-space fault proxy (loss, latency, jitter, blackhole) before a loopback port",
    )
    faultproxy.add_argument(
        "--target", type=_loopback_target, required=True, help="HOST:PORT on loopback"
    )
    faultproxy.add_argument("--listen-port", type=port, default=0, help="default: a free port")
    faultproxy.add_argument(
        "--loss", type=_fraction, default=0.0, help="chance a chunk is retransmitted (0-1)"
    )
    faultproxy.add_argument("--latency-ms", type=non_negative_float, default=0.0, help="one way")
    faultproxy.add_argument("--jitter-ms", type=non_negative_float, default=0.0)
    faultproxy.add_argument(
        "--blackhole", action="store_true", help="deliver nothing, keep sockets open"
    )
    faultproxy.add_argument("--seed", type=int, help="for a repeatable loss pattern")
    faultproxy.set_defaults(run=run_faultproxy)


def _fraction(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1, not {value}")
    return value


def _loopback_target(text: str) -> tuple[str, int]:
    host, _, number = text.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{text!r}: the target must be HOST:PORT on loopback")
    return host, port(number)


def run_backend(args: argparse.Namespace) -> None:
    import uvloop

    from wsfleet import logs
    from wsfleet_tools.demo_backend import run as serve

    settings = from_args(BackendSettings, args)
    logs.configure("backend", args.log_level)
    uvloop.run(serve(settings))


def run_faultproxy(args: argparse.Namespace) -> None:
    from wsfleet_tools.chaos.faults import Faults
    from wsfleet_tools.chaos.proxy import FaultProxy, serve_until_stopped

    faults = Faults(
        loss=args.loss,
        latency_s=args.latency_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        blackhole=args.blackhole,
    )
    host, target_port = args.target
    proxy = FaultProxy(
        host, target_port, listen_port=args.listen_port, faults=faults, seed=args.seed
    )
    asyncio.run(serve_until_stopped(proxy))


def exec_envoy(args: argparse.Namespace) -> None:
    """Render a bootstrap for the given xDS server and become Envoy (exec)."""
    import tempfile

    from wsfleet import fleet_ca
    from wsfleet_tools.launcher.envoy_bootstrap import (
        BootstrapParams,
        XdsTls,
        envoy_binary,
        render_bootstrap,
    )

    tls = None
    if args.tls_dir is not None:
        node = fleet_ca.files(args.tls_dir, fleet_ca.node_name(args.node_id))
        tls = XdsTls(node.cert, node.key, fleet_ca.files(args.tls_dir, fleet_ca.CA_NAME).cert)
    params = BootstrapParams(
        node_id=args.node_id,
        node_cluster=args.node_cluster,
        xds_host=socket.gethostbyname(args.xds_host),
        xds_port=args.xds_port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        api_type="DELTA_GRPC" if args.delta else "GRPC",
        region=args.region,
        xds_tls=tls,
        stats_host=args.stats_host,
        stats_port=args.stats_port,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as bootstrap:
        bootstrap.write(render_bootstrap(params))
    binary = str(envoy_binary())
    os.execv(
        binary,
        [
            binary,
            "-c",
            bootstrap.name,
            "--disable-hot-restart",
            "--concurrency",
            str(args.concurrency),
            "--log-level",
            "warning",
        ],
    )
