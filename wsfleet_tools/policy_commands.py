"""``wsfleet policy validate`` (check a policy file) and ``wsfleet policy diff`` (a dry run
of a policy edit, offline or against a live server)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from wsfleet.errors import ConfigError
from wsfleet_tools.admin_client import AdminClient, admin_token
from wsfleet_tools.cli_options import add_state_dir_argument


def register(commands: argparse._SubParsersAction[Any]) -> None:
    policy = commands.add_parser("policy", help="check routing policy files")
    actions = policy.add_subparsers(dest="policy_command", required=True, parser_class=type(policy))
    validate = actions.add_parser("validate", help="validate a policy file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=validate_command)
    diff = actions.add_parser(
        "diff", help="what a policy edit would change in Envoy (OLD NEW, or --server URL NEW)"
    )
    diff.add_argument("files", type=Path, nargs="+", metavar="FILE", help="OLD NEW, or NEW")
    diff.add_argument("--server", help="compare NEW with a running control plane's admin URL")
    diff.add_argument("--admin-token", help="admin token (default: the state dir's)")
    add_state_dir_argument(diff)
    diff.set_defaults(run=run_diff)


def validate_command(args: argparse.Namespace) -> None:
    from xds_server.policy_loader import load_bundle

    bundle = load_bundle(args.file)
    policy = bundle.policy
    print(
        f"{args.file}: valid ({len(policy.listeners)} listeners, {len(policy.routes)} routes, "
        f"{len(policy.pools)} pools, {len(bundle.certificates)} certificates)"
    )


def run_diff(args: argparse.Namespace) -> None:
    token = admin_token(args.admin_token, args.state_dir) if args.server else None
    print(diff_command(args.files, args.server, token))


def diff_command(files: list[Path], server: str | None, token: str | None = None) -> str:
    from xds_server.membership import Endpoint
    from xds_server.policy_diff import diff_versions, render, resource_versions
    from xds_server.policy_loader import load_bundle

    if server is None:
        if len(files) != 2:
            raise ConfigError("policy diff takes OLD NEW (or --server URL NEW)")
        old, new = (load_bundle(path) for path in files)
        return render(diff_versions(resource_versions(old, {}), resource_versions(new, {})))
    if len(files) != 1:
        raise ConfigError("policy diff --server URL takes one file: NEW")
    client = AdminClient(server, token or "")
    current = client.call("GET", "/debug/policy")
    membership = {
        pool: tuple(Endpoint(**endpoint) for endpoint in endpoints)
        for pool, endpoints in client.call("GET", "/debug/membership").items()
    }
    config = client.call("GET", "/debug/config")
    served = {
        short: {name: entry["version"] for name, entry in typed["resources"].items()}
        for short, typed in config.items()
    }
    new = load_bundle(files[0])
    override = current.get("listener_port_override")
    if override is not None:
        new = dataclasses.replace(new, policy=new.policy.with_listener_port(int(override)))
    return render(diff_versions(served, resource_versions(new, membership)))
