"""``python -m benchmarks NAME [options]``: run one benchmark and print its figures."""

from __future__ import annotations

import argparse
import asyncio

from benchmarks import chaos, envoy_share, heartbeat_sweep, idle_connections, load, xds_push

BENCHMARKS = {
    "chaos": (chaos, "pods killed in batches under SDK clients: who reconnects, how spread, loss"),
    "envoy-share": (
        envoy_share,
        "Envoy's memory per proxied WebSocket under each setting (one run, same load)",
    ),
    "heartbeat-sweep": (
        heartbeat_sweep,
        "heartbeat settings vs loss and latency: false positives, time to detect",
    ),
    "load": (load, "surge, sustained, latency, throughput: wsfleet vs Envoy+bare vs bare"),
    "idle-connections": (
        idle_connections,
        "idle connections on one sidecar vs a bare aiohttp server: KB/conn, handshakes/s, RTT",
    ),
    "xds-push": (xds_push, "membership change -> every simulated Envoy has the new EDS"),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="name", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        module.add_arguments(commands.add_parser(name, help=help_text))
    args = parser.parse_args()
    module, _ = BENCHMARKS[args.name]
    asyncio.run(module.main(args))


if __name__ == "__main__":
    main()
