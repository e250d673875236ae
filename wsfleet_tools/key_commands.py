"""``wsfleet token`` (a token the local fleet accepts) and ``wsfleet keygen`` (the state
dir's keys, tokens and certificates, or one pod's own key)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsfleet.arg_types import positive_float
from wsfleet.errors import ConfigError
from wsfleet_tools.cli_options import add_state_dir_argument


def register_token(commands: argparse._SubParsersAction[Any]) -> None:
    token = commands.add_parser("token", help="print a token the local fleet accepts")
    token.add_argument("--user", required=True, help="user id (the token subject)")
    token.add_argument(
        "--ttl", type=positive_float, default=3600.0, help="seconds valid (default 3600)"
    )
    token.add_argument(
        "--channels",
        action="append",
        metavar="PATTERN",
        help="channels it may subscribe to (claim `channels`; * matches any run; repeat)",
    )
    token.add_argument(
        "--subs",
        action="append",
        metavar="CHANNEL",
        help="channels its session is subscribed to when it opens (claim `subs`; repeat)",
    )
    add_state_dir_argument(token)
    token.set_defaults(run=token_command)


def register_keygen(commands: argparse._SubParsersAction[Any]) -> None:
    keygen = commands.add_parser(
        "keygen",
        help="create the state dir's token signing key, registry key, admin token, fleet CA "
        "(with the control plane's certificate and one per Envoy node) and the server API's "
        "keys file (with a key of all scopes in api.key)",
    )
    add_state_dir_argument(keygen)
    keygen.add_argument(
        "--envoy-node",
        action="append",
        default=None,
        metavar="NODE[@REGION]",
        help="issue an Envoy client certificate for this node id (repeatable; "
        "default envoy-1@local)",
    )
    keygen.add_argument(
        "--pod-key",
        metavar="POD_ID",
        help="only issue this pod's own key (it signs its record and yields its admin token; "
        "the pod gets it instead of the registry key) into --out, from --registry-key",
    )
    keygen.add_argument(
        "--registry-key",
        type=Path,
        help="with --pod-key: the fleet's registry key (default: the state dir's)",
    )
    keygen.add_argument("--out", type=Path, help="with --pod-key: the pod key file (mode 0600)")
    keygen.set_defaults(run=keygen_command)


def token_command(args: argparse.Namespace) -> None:
    from wsfleet.tokens import key_path, mint_token, read_auth_key

    path = key_path(args.state_dir)
    if not path.exists():
        raise ConfigError(
            f"no auth key in {args.state_dir}: run `wsfleet up` first (or pass --state-dir)"
        )
    claims: dict[str, object] = {}
    if args.channels:
        claims["channels"] = args.channels
    if args.subs:
        claims["subs"] = args.subs
    print(mint_token(read_auth_key(path), args.user, args.ttl, extra_claims=claims or None))


def keygen_command(args: argparse.Namespace) -> None:
    if args.pod_key is not None:
        _issue_pod_key(args)
        return
    from server_api.keys import ensure_local_key
    from wsfleet import fleet_ca
    from wsfleet.admin_token import ensure_admin_token
    from wsfleet.registry.signing import ensure_registry_key
    from wsfleet.tokens import ensure_auth_key

    print(ensure_auth_key(args.state_dir))
    print(ensure_registry_key(args.state_dir))
    print(ensure_admin_token(args.state_dir))
    print(fleet_ca.ensure_server_pair(args.state_dir).cert)
    for spec in args.envoy_node or ["envoy-1@local"]:
        node_id, _, region = spec.partition("@")
        print(fleet_ca.ensure_node_pair(args.state_dir, node_id, region or "local").cert)
    for path in ensure_local_key(args.state_dir):
        print(path)


def _issue_pod_key(args: argparse.Namespace) -> None:
    """``wsfleet keygen --pod-key ID --out FILE``: one pod's own key, derived from the fleet's
    registry key (a Kubernetes initContainer runs it; the gateway never mounts the root)."""
    from wsfleet.registry.signing import KEY_FILE, read_registry_key, write_pod_key

    if args.out is None:
        raise ConfigError("--pod-key needs --out FILE (where the pod reads its key)")
    root = read_registry_key(args.registry_key or args.state_dir / KEY_FILE)
    if root is None or not root.is_root:
        raise ConfigError("--registry-key must be the fleet's registry key, not a pod key")
    try:
        print(write_pod_key(root, args.pod_key, args.out))
    except ValueError as exc:
        raise ConfigError(f"--pod-key: {exc}") from None
