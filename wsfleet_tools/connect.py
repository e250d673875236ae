"""``wsfleet connect``: a tiny interactive client (type a line, see the reply). The client
itself is :mod:`wsfleet_tools.connect_session`, imported when the command runs (the HTTP
client is not loaded for every other command)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from wsfleet_tools.cli_options import add_state_dir_argument


def register(commands: argparse._SubParsersAction[Any]) -> None:
    connect = commands.add_parser("connect", help="interactive client: type a line, see the reply")
    connect.add_argument("url", help="e.g. ws://127.0.0.1:8080/ws")
    connect.add_argument("--user", required=True, help="user id")
    connect.add_argument("--token", help="token (default: signed with the state dir's key)")
    add_state_dir_argument(connect)
    connect.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from wsfleet_tools.connect_session import interactive

    asyncio.run(interactive(args.url, args.user, args.token, args.state_dir))
