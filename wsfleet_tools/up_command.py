"""``wsfleet up``: run the local fleet in the foreground until Ctrl-C (or SIGTERM).

The launcher itself is :class:`~wsfleet_tools.launcher.fleet.LocalFleet`; this module is
its command line: the flags, the table printed once it is up, and the clean stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from wsfleet.arg_types import non_negative_int, port, positive_int
from wsfleet.stop_signals import signal_events
from wsfleet_tools.cli_options import add_state_dir_argument


def register(commands: argparse._SubParsersAction[Any]) -> None:
    up = commands.add_parser(
        "up", help="run the local fleet (Redis, xDS, Envoy, sidecars, backend)"
    )
    up.add_argument("--sidecars", type=positive_int, default=2, help="gateway sidecars (default 2)")
    up.add_argument(
        "--xds-replicas",
        type=positive_int,
        default=1,
        help="control planes serving the same snapshots; Envoy lists them all (default 1)",
    )
    up.add_argument(
        "--envoys",
        type=positive_int,
        default=1,
        help="Envoys, one per zone; with 2 or more each takes a port of its own (listed at "
        "start) and an L4 tier takes --port in front of them; a user lands on the same "
        "gateway through any (default 1)",
    )
    up.add_argument(
        "--api-instances",
        type=non_negative_int,
        default=2,
        help="server API instances behind Envoy's /api/ (default 2; any takes any call)",
    )
    up.add_argument(
        "--app",
        choices=["demo", "chat"],
        default="demo",
        help="the backend: the demo (echo and commands) or the chat example, whose page is "
        "served on --chat-port (default demo)",
    )
    up.add_argument(
        "--chat-port", type=port, default=8082, help="the chat's page, with --app chat (8082)"
    )
    up.add_argument(
        "--broadcaster",
        action="append",
        default=[],
        metavar="USER",
        help="a user the demo backend lets /broadcast to every session (repeat; * for any)",
    )
    up.add_argument("--port", type=port, default=8080, help="client port on Envoy (default 8080)")
    up.add_argument(
        "--admin-port", type=port, default=8081, help="control-plane admin port (default 8081)"
    )
    up.add_argument("--policy", type=Path, help="routing policy YAML (default: embedded)")
    redis = up.add_mutually_exclusive_group()
    redis.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    redis.add_argument(
        "--redis-cluster",
        type=positive_int,
        metavar="MASTERS",
        help="run an embedded Redis Cluster of this many masters instead of one Redis",
    )
    up.add_argument(
        "--redis-replicas",
        type=non_negative_int,
        default=0,
        help="with --redis-cluster: replicas of each master (default 0)",
    )
    add_state_dir_argument(up, help="keys and run files (default .wsfleet)")
    up.add_argument("--delta", action="store_true", help="Envoy uses Delta ADS instead of SotW")
    up.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from wsfleet import logs

    logs.configure("launcher", args.log_level, json_output=False)
    asyncio.run(_up(args))


async def _up(args: argparse.Namespace) -> None:
    from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
    from wsfleet_tools.log_view import print_line

    options = FleetOptions(
        sidecars=args.sidecars,
        xds_replicas=args.xds_replicas,
        envoys=args.envoys,
        api_instances=args.api_instances,
        app=args.app,
        chat_port=args.chat_port,
        broadcasters=tuple(args.broadcaster),
        port=args.port,
        admin_port=args.admin_port,
        policy_path=args.policy,
        redis_url=args.redis_url,
        redis_cluster=args.redis_cluster or 0,
        redis_replicas=args.redis_replicas,
        state_dir=args.state_dir,
        api_type="DELTA_GRPC" if args.delta else "GRPC",
        log_level=args.log_level,
        restart_children=True,  # a child that dies is restarted, the rest keeps serving
    )
    fleet = LocalFleet(options, sink=print_line)
    stop, _ = signal_events()
    stopping = asyncio.create_task(stop.wait())
    starting = asyncio.create_task(fleet.start())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        print("wsfleet: stopped before the fleet was up", file=sys.stderr)
        return
    starting.result()  # raises the startup error, if any (the fleet already cleaned up)
    from wsfleet_tools.launcher.control import LauncherControl

    control = LauncherControl(fleet)
    await control.start()
    print(
        f"\nwsfleet is up ({args.sidecars} sidecars). Ctrl-C stops everything.\n{fleet.table()}\n",
        flush=True,
    )
    # with restart_children only a child that cannot be restarted ends the fleet (none now)
    died = asyncio.create_task(fleet.supervisor.wait_unexpected_exit())
    await asyncio.wait({stopping, died}, return_when=asyncio.FIRST_COMPLETED)
    failure = None
    if died.done():
        child = died.result()
        failure = f"{child.name} exited unexpectedly (code {child.process.returncode})"
    else:
        died.cancel()
    print("wsfleet: stopping ...", file=sys.stderr, flush=True)
    await control.stop()
    await fleet.stop()
    print("wsfleet: stopped", file=sys.stderr, flush=True)
    if failure:
        from wsfleet.errors import StartupError

        raise StartupError(failure)
