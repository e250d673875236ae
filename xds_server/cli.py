"""``wsfleet xds``: run the xDS control plane. Its flags (and ``WSFLEET_…`` variables) are
made from :class:`~wsfleet.settings.XdsSettings`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from wsfleet.settings import XdsSettings
from wsfleet.settings_flags import add_flags, from_args


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("xds", help="run the xDS control plane")
    add_flags(parser, XdsSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from wsfleet import logs  # here, not for every command line: structlog, tracing
    from xds_server.main import run as serve

    settings = from_args(XdsSettings, args)  # checked before anything starts
    logs.configure("xds", args.log_level)
    asyncio.run(serve(settings))
