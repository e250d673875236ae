"""``python -m benchmarks NAME [options]``: run one benchmark and print its figures.

``--smoke`` runs it at CI size (seconds, a few dozen connections; sizes given explicitly
still win) and, unless ``--output-dir`` says otherwise, writes its results to a new
temporary directory, never over the full-size results in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from benchmarks import (
    autobahn,
    bridge_writes,
    channels,
    chaos,
    envoy_chaos,
    envoy_memory,
    envoy_share,
    heartbeat_sweep,
    idle_connections,
    load,
    processes,
    redis_round_trips,
    scale,
    xds_push,
)
from benchmarks.report import RESULTS

BENCHMARKS: dict[str, tuple[ModuleType, str]] = {
    "autobahn": (autobahn, "Autobahn TestSuite cases: wsfleet defaults, conformance profile, bare"),
    "bridge-writes": (
        bridge_writes,
        "CPU per write of the backend bridge: a grpc.aio stream vs a plain asyncio stream",
    ),
    "channels": (
        channels,
        "channel fan-out per CPU-s vs bare aiohttp, latency to the last subscriber, a gateway"
        " SIGKILLed under a stream, presence after it",
    ),
    "chaos": (chaos, "pods killed in batches under SDK clients: who reconnects, how spread, loss"),
    "envoy-chaos": (
        envoy_chaos,
        "the L7 Envoys behind the L4 under SDK clients: a rolling restart of all 3 (reconnects"
        " per 0.5 s vs the drain budget, loss), then one SIGKILLed",
    ),
    "envoy-memory": (
        envoy_memory,
        "Envoy's KB per upgraded connection, idle and after traffic, per setting",
    ),
    "envoy-share": (
        envoy_share,
        "Envoy's memory per proxied WebSocket under each setting (one run, same load)",
    ),
    "heartbeat-sweep": (
        heartbeat_sweep,
        "heartbeat settings vs loss and latency: false positives, time to detect",
    ),
    "load": (
        load,
        "surge, sustained, latency, throughput, keep-alive: wsfleet raw and v1 vs Envoy+bare"
        " vs bare",
    ),
    "idle-connections": (
        idle_connections,
        "idle connections on one sidecar vs a bare aiohttp server: KB/conn, handshakes/s, RTT",
    ),
    "redis-round-trips": (
        redis_round_trips,
        "Redis CPU per round trip beside the script calls it carries (capacity input)",
    ),
    "scale": (scale, "50k connections through Envoys and gateways in steps: cost curve"),
    "xds-push": (xds_push, "membership change -> every simulated Envoy has the new EDS"),
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    subparsers = {}
    for name, (module, help_text) in BENCHMARKS.items():
        sub = commands.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.add_argument(
            "--smoke",
            action="store_true",
            help="CI size: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in _smoke(module)),
        )
        sub.add_argument(
            "--output-dir",
            type=Path,
            help=f"where NAME.json (and plots) go (default {RESULTS}; with --smoke: a new"
            " temporary directory)",
        )
        subparsers[name] = sub
    return parser, subparsers


def _smoke(module: ModuleType) -> list[tuple[str, str]]:
    return [
        (key, " ".join(map(str, value)) if isinstance(value, list) else str(value))
        for key, value in module.SMOKE.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser, subparsers = _parser()
    args = parser.parse_args(argv)
    module, _ = BENCHMARKS[args.name]
    if args.smoke:  # the smoke sizes become the defaults: options given explicitly still win
        subparsers[args.name].set_defaults(**module.SMOKE)
        args = parser.parse_args(argv)
    problem = module.check_arguments(args)
    if problem:
        subparsers[args.name].error(problem)
    if args.output_dir is None:
        args.output_dir = (
            Path(tempfile.mkdtemp(prefix=f"wsfleet-smoke-{args.name}-")) if args.smoke else RESULTS
        )
    sys.exit(processes.run(module.main(args)))


if __name__ == "__main__":
    main()
