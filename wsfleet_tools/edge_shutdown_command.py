"""The command line of ``wsfleet edge-shutdown-manager`` (:mod:`wsfleet_tools.edge_shutdown`):
its flags, and the aiohttp shell imported only when it runs."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from wsfleet.settings_flags import add_flags, from_args
from wsfleet_tools.edge_shutdown import SHUTDOWN_PATH, EdgeShutdownSettings


def _run(args: argparse.Namespace) -> None:
    from wsfleet import logs
    from wsfleet_tools.edge_shutdown_manager import serve

    settings = from_args(EdgeShutdownSettings, args)
    logs.configure("edge-shutdown", args.log_level)
    asyncio.run(serve(settings))


def register(commands: Any) -> None:
    """Add ``wsfleet edge-shutdown-manager`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "edge-shutdown-manager",
        help="beside Envoy in a Kubernetes pod: drain this Envoy through the control plane "
        f"before it stops (its preStop hooks call GET {SHUTDOWN_PATH})",
    )
    add_flags(parser, EdgeShutdownSettings)
    parser.set_defaults(run=_run)
