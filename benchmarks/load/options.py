"""The options of ``load``, their smoke sizes, and the checks of their values."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from benchmarks import processes
from wsfleet.arg_types import non_negative_float, non_negative_int, positive_float, positive_int

CLIENTS = ("loadgen", "picows")

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
    "keepalive_seconds": 1.0,
    "keepalive_ping_rate": 100.0,
    "max_seconds": 60.0,
    "outside_echo_connections": 16,
    "outside_echo_messages": 50,
    "outside_rounds": 1,  # the rounds' three fleets at once: one round keeps CI light
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
    outside = parser.add_argument_group(
        "outside client", "--client picows: the surge and the echo again, from a picows client"
    )
    outside.add_argument(
        "--client",
        choices=CLIENTS,
        default="loadgen",
        help="picows: also measure with an outside client (one process on the clients' core)"
        " and print both clients' figures side by side, with why they differ",
    )
    outside.add_argument(
        "--outside-in-flight",
        type=positive_int,
        default=256,
        help="handshakes in flight (default 256)",
    )
    outside.add_argument(
        "--outside-echo-connections",
        type=positive_int,
        default=64,
        help="echo connections (default 64)",
    )
    outside.add_argument(
        "--outside-echo-depth",
        type=positive_int,
        default=16,
        help="echo messages in flight each (default 16)",
    )
    outside.add_argument(
        "--outside-echo-messages",
        type=positive_int,
        default=500,
        help="echo messages per connection, in all (default 500)",
    )
    outside.add_argument(
        "--outside-rounds",
        type=non_negative_int,
        default=0,
        help="then start wsfleet raw, wsfleet v1 and envoy+bare together and run the outside"
        " client against them this many rounds, taken in turn: each ratio per round, and"
        " their median (default 0: none)",
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
    if args.outside_rounds > 80:
        return f"--outside-rounds {args.outside_rounds}: at most 80 (a source address each)"
    if args.outside_rounds and args.client != "picows":
        return "--outside-rounds needs --client picows (the rounds are the outside client's)"
    if args.client == "picows" and importlib.util.find_spec("picows") is None:
        return "--client picows needs the picows package (pip install picows; in the dev extras)"
    return None
