"""``wsfleet sidecar``: run one gateway sidecar. Its flags (and ``WSFLEET_…`` variables)
are made from :class:`~wsfleet.settings.SidecarSettings`."""

from __future__ import annotations

import argparse
from typing import Any

from wsfleet.settings import SidecarSettings
from wsfleet.settings_flags import add_flags, from_args


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("sidecar", help="run one gateway sidecar")
    add_flags(parser, SidecarSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import uvloop

    from sidecar.main import run as serve
    from wsfleet import logs  # here, not for every command line: structlog, tracing

    settings = from_args(SidecarSettings, args)  # checked before anything starts
    logs.configure("sidecar", args.log_level)
    uvloop.run(serve(settings))
