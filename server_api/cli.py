"""``wsfleet api``: run one server API instance. Its flags (and ``WSFLEET_…`` variables)
are made from :class:`~wsfleet.settings.ApiSettings`."""

from __future__ import annotations

import argparse
from typing import Any

from wsfleet.settings import ApiSettings
from wsfleet.settings_flags import add_flags, from_args


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("api", help="run one server API instance (publish, send, ...)")
    add_flags(parser, ApiSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import uvloop

    from server_api.main import run as serve
    from wsfleet import logs  # here, not for every command line: structlog, tracing

    settings = from_args(ApiSettings, args)  # checked before anything starts
    logs.configure("api", args.log_level)
    uvloop.run(serve(settings))
