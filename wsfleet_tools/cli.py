"""``wsfleet``: run the local fleet, its parts, and the tools around them.

Every error ends with one line on stderr (``wsfleet: error: ...``) and an exit
code != 0; nothing is left running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from server_api import cli as api_cli
from sidecar import cli as sidecar_cli
from wsfleet.errors import WsfleetError
from wsfleet_tools import (
    api_commands,
    capacity_command,
    commands,
    component_commands,
    connect,
    edge_shutdown_command,
    envoy_commands,
    key_commands,
    policy_commands,
    status_command,
    up_command,
)
from xds_server import cli as xds_cli

Register = Callable[["argparse._SubParsersAction[Any]"], None]

# Every command, in the order ``wsfleet --help`` lists them. Each registers its parser and
# its ``run`` (``set_defaults(run=...)``), in the module that does the work.
COMMANDS: tuple[Register, ...] = (
    up_command.register,
    key_commands.register_token,
    connect.register,
    xds_cli.register,
    sidecar_cli.register,
    api_cli.register,
    api_commands.register,  # publish, presence, history, apikey
    status_command.register,
    envoy_commands.register,  # envoys
    edge_shutdown_command.register,  # edge-shutdown-manager
    component_commands.register_backend,
    component_commands.register_envoy,
    key_commands.register_keygen,
    commands.register,  # pods, drain, undrain, stop, disconnect, rollout
    capacity_command.register,
    component_commands.register_faultproxy,
    policy_commands.register,  # policy validate, policy diff
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"wsfleet: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wsfleet", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"wsfleet {_version()}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in COMMANDS:
        register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wsfleet")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _dispatch(args)
    except WsfleetError as exc:
        sys.stderr.write(f"wsfleet: error: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _dispatch(args: argparse.Namespace) -> None:
    args.run(args)
