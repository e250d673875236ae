"""``wsfleet capacity``: pods, Envoys and Redis for N connections, from measured costs
(the plan itself is :mod:`wsfleet_tools.capacity`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet.batch_spacing import BATCH_SPACING_S
from wsfleet.errors import ConfigError


def register(commands: argparse._SubParsersAction[Any]) -> None:
    capacity = commands.add_parser(
        "capacity", help="pods, Envoys and Redis for N connections, from measured costs"
    )
    capacity.add_argument("--connections", type=positive_int, required=True, help="per region")
    capacity.add_argument(
        "--message-rate",
        type=float,
        default=0.05,
        help="messages per connection per second, both ways (default 0.05)",
    )
    capacity.add_argument("--headroom", type=float, default=0.3, help="kept free (default 0.3)")
    capacity.add_argument("--pod-memory-gib", type=positive_float, default=2.0)
    capacity.add_argument("--envoy-memory-gib", type=positive_float, default=8.0)
    capacity.add_argument(
        "--redis-batch-spacing",
        type=non_negative_float,
        default=BATCH_SPACING_S * 1000,
        metavar="MS",
        help="the smallest Redis batch spacing the plan may choose, in ms (default "
        "%(default)g: the gateways' default; the plan raises it until round trips fit in "
        "25 %% of a shard)",
    )
    capacity.add_argument(
        "--from",
        dest="results",
        type=Path,
        action="append",
        default=[],
        help="benchmark results JSON (repeat); default: the recorded figures",
    )
    capacity.add_argument("--json", action="store_true", help="print the plan as JSON")
    capacity.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from wsfleet_tools.capacity import load_measured, plan, render

    for path in args.results:
        if not path.exists():
            raise ConfigError(f"no benchmark results at {path}")
    try:
        measured = load_measured(args.results)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable benchmark results: {exc}") from None
    try:
        result = plan(
            args.connections,
            measured,
            message_rate=args.message_rate,
            headroom=args.headroom,
            pod_memory_gib=args.pod_memory_gib,
            envoy_memory_gib=args.envoy_memory_gib,
            redis_batch_spacing_s=args.redis_batch_spacing / 1000,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(result.to_json(), indent=2) if args.json else render(result, measured))
