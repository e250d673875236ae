"""``wsfleet``: run the local fleet, its parts, and the tools around them.

Every error ends with one line on stderr (``wsfleet: error: ...``) and an exit
code != 0; nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from server_api import cli as api_cli
from sidecar import cli as sidecar_cli
from wsfleet.arg_types import (
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from wsfleet.batch_spacing import BATCH_SPACING_S
from wsfleet.errors import ConfigError, WsfleetError
from wsfleet.process_shell import signal_events
from wsfleet.settings import DEFAULT_STATE_DIR, BackendSettings
from wsfleet.settings_flags import add_flags, from_args
from wsfleet_tools.admin_client import add_admin_arguments
from xds_server import cli as xds_cli


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"wsfleet: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _fraction(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1, not {value}")
    return value


def _loopback_target(text: str) -> tuple[str, int]:
    host, _, number = text.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{text!r}: the target must be HOST:PORT on loopback")
    return host, port(number)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wsfleet", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"wsfleet {_version()}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    up.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="keys and run files (default .wsfleet)",
    )
    up.add_argument("--delta", action="store_true", help="Envoy uses Delta ADS instead of SotW")

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
    token.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    connect = commands.add_parser("connect", help="interactive client: type a line, see the reply")
    connect.add_argument("url", help="e.g. ws://127.0.0.1:8080/ws")
    connect.add_argument("--user", required=True, help="user id")
    connect.add_argument("--token", help="token (default: signed with the state dir's key)")
    connect.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    xds_cli.register(commands)
    sidecar_cli.register(commands)
    api_cli.register(commands)
    from wsfleet_tools import api_commands, edge_shutdown, envoy_commands, status_command

    for module in (api_commands, status_command, envoy_commands, edge_shutdown):
        module.register(commands)
    backend = commands.add_parser("backend", help="run the demo echo backend")
    add_flags(backend, BackendSettings)
    backend.set_defaults(run=_run_backend)

    envoy = commands.add_parser(
        "envoy", help="run Envoy with a bootstrap pointing at an xDS server"
    )
    envoy.add_argument("--xds-host", default="127.0.0.1")
    envoy.add_argument("--xds-port", type=port, default=18000)
    envoy.add_argument("--node-id", default="envoy-1")
    envoy.add_argument("--node-cluster", default="wsfleet")
    envoy.add_argument("--admin-host", default="127.0.0.1")
    envoy.add_argument("--admin-port", type=port, default=9901)
    envoy.add_argument(
        "--stats-host",
        default="0.0.0.0",
        help="address of the stats listener: GET /stats/prometheus only (default 0.0.0.0)",
    )
    envoy.add_argument(
        "--stats-port",
        type=port,
        default=9902,
        help="port of the stats listener, for Prometheus; the admin API stays on "
        "--admin-host (default 9902)",
    )
    envoy.add_argument("--delta", action="store_true", help="Delta ADS instead of SotW")
    envoy.add_argument("--concurrency", type=positive_int, default=1)
    envoy.add_argument("--region", default="local", help="this Envoy's locality region")
    envoy.add_argument(
        "--tls-dir",
        type=Path,
        help="reach xDS over mutual TLS with the fleet CA's files in this directory "
        "(node-<node id>.crt/.key and fleet-ca.crt, made by wsfleet keygen)",
    )

    keygen = commands.add_parser(
        "keygen",
        help="create the state dir's token signing key, registry key, admin token, fleet CA "
        "(with the control plane's certificate and one per Envoy node) and the server API's "
        "keys file (with a key of all scopes in api.key)",
    )
    keygen.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
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

    pods = commands.add_parser(
        "pods", help="list the gateway pods: serving, draining, drained, gone"
    )
    add_admin_arguments(pods)

    drain = commands.add_parser("drain", help="drain pods: paced 1012 closes within a budget")
    drain.add_argument("pods", nargs="*", metavar="POD", help="pod ids")
    drain.add_argument("--region", help="drain every pod of this region")
    drain.add_argument(
        "--budget", type=non_negative_float, default=30.0, help="seconds (default 30)"
    )
    drain.add_argument("--wait", action="store_true", help="follow progress until done")
    add_admin_arguments(drain)

    undrain = commands.add_parser("undrain", help="put a draining or drained pod back to serve")
    undrain.add_argument("pod", metavar="POD")
    add_admin_arguments(undrain)

    stop = commands.add_parser("stop", help="stop one pod of the local fleet (`wsfleet up`)")
    stop.add_argument("pod", metavar="POD")
    stop.add_argument("--json", action="store_true", help="print the answer as JSON")
    stop.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    disconnect = commands.add_parser("disconnect", help="close a user's or a connection's sockets")
    disconnect.add_argument("--user", help="every connection of this user, on any pod")
    disconnect.add_argument("--connection", help="one connection id")
    disconnect.add_argument("--code", type=int, default=1000, help="close code (default 1000)")
    disconnect.add_argument("--reason", default="disconnected by operator")
    add_admin_arguments(disconnect)

    rollout = commands.add_parser(
        "rollout", help="blue/green the local fleet's sidecar pool (or roll its Envoys)"
    )
    rollout.add_argument(
        "--envoys",
        action="store_true",
        help="replace the L7 Envoys one at a time instead (each drained over --budget; needs"
        " wsfleet up --envoys 2 or more)",
    )
    rollout.add_argument(
        "--sidecars", type=positive_int, help="green pods (default: as many as blue)"
    )
    rollout.add_argument(
        "--budget",
        type=non_negative_float,
        default=10.0,
        help="blue drain budget (with --envoys: each Envoy's), s",
    )
    rollout.add_argument(
        "--min-success",
        type=float,
        default=0.999,
        help="roll back when green's handshake success drops below (default 0.999)",
    )
    rollout.add_argument(
        "--green-arg",
        action="append",
        default=[],
        help="an extra flag for the green sidecars (repeat)",
    )
    rollout.add_argument("--json", action="store_true", help="print the final status as JSON")
    rollout.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

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
        help="the gateways' --redis-batch-spacing, in ms (default %(default)g)",
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

    faultproxy = commands.add_parser(
        "faultproxy",
        help="a user-space fault proxy (loss, latency, jitter, blackhole) before a loopback port",
    )
    faultproxy.add_argument(
        "--target", type=_loopback_target, required=True, help="HOST:PORT on loopback"
    )
    faultproxy.add_argument("--listen-port", type=port, default=0, help="default: a free port")
    faultproxy.add_argument(
        "--loss", type=_fraction, default=0.0, help="chance a chunk is retransmitted (0-1)"
    )
    faultproxy.add_argument("--latency-ms", type=non_negative_float, default=0.0, help="one way")
    faultproxy.add_argument("--jitter-ms", type=non_negative_float, default=0.0)
    faultproxy.add_argument(
        "--blackhole", action="store_true", help="deliver nothing, keep sockets open"
    )
    faultproxy.add_argument("--seed", type=int, help="for a repeatable loss pattern")

    policy = commands.add_parser("policy", help="check routing policy files")
    policy_commands = policy.add_subparsers(
        dest="policy_command", required=True, parser_class=_Parser
    )
    validate = policy_commands.add_parser("validate", help="validate a policy file")
    validate.add_argument("file", type=Path)
    diff = policy_commands.add_parser(
        "diff", help="what a policy edit would change in Envoy (OLD NEW, or --server URL NEW)"
    )
    diff.add_argument("files", type=Path, nargs="+", metavar="FILE", help="OLD NEW, or NEW")
    diff.add_argument("--server", help="compare NEW with a running control plane's admin URL")
    diff.add_argument("--admin-token", help="admin token (default: the state dir's)")
    diff.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wsfleet")
    except PackageNotFoundError:
        return "unknown"


def _run_backend(args: argparse.Namespace) -> None:
    from wsfleet import logs
    from wsfleet_tools.demo_backend import run as run_backend

    settings = from_args(BackendSettings, args)
    logs.configure("backend", args.log_level)
    _run(run_backend(settings))


def _run(coroutine: Coroutine[Any, Any, None], use_uvloop: bool = False) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


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
    from wsfleet import logs

    command = args.command
    if getattr(args, "run", None) is not None:  # a command an app registered (xds, sidecar)
        args.run(args)
    elif command == "up":
        logs.configure("launcher", args.log_level, json_output=False)
        _run(_up(args))
    elif command == "token":
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
    elif command == "connect":
        from wsfleet_tools.connect import interactive

        _run(interactive(args.url, args.user, args.token, args.state_dir))
    elif command == "envoy":
        _exec_envoy(args)
    elif command == "keygen" and args.pod_key is not None:
        _issue_pod_key(args)
    elif command == "keygen":
        from wsfleet import fleet_ca
        from wsfleet.admin_auth import ensure_admin_token
        from wsfleet.registry.signing import ensure_registry_key
        from wsfleet.tokens import ensure_auth_key

        print(ensure_auth_key(args.state_dir))
        print(ensure_registry_key(args.state_dir))
        print(ensure_admin_token(args.state_dir))
        print(fleet_ca.ensure_server_pair(args.state_dir).cert)
        for spec in args.envoy_node or ["envoy-1@local"]:
            node_id, _, region = spec.partition("@")
            print(fleet_ca.ensure_node_pair(args.state_dir, node_id, region or "local").cert)
        from server_api.keys import ensure_local_key

        for path in ensure_local_key(args.state_dir):
            print(path)
    elif command == "policy" and args.policy_command == "validate":
        from xds_server.policy_loader import load_bundle

        bundle = load_bundle(args.file)
        policy = bundle.policy
        print(
            f"{args.file}: valid ({len(policy.listeners)} listeners, {len(policy.routes)} routes, "
            f"{len(policy.pools)} pools, {len(bundle.certificates)} certificates)"
        )
    elif command == "policy" and args.policy_command == "diff":
        from wsfleet_tools.policy_commands import diff_command

        token = None
        if args.server:
            from wsfleet_tools.admin_client import admin_token

            token = admin_token(args.admin_token, args.state_dir)
        print(diff_command(args.files, args.server, token))
    elif command == "faultproxy":
        from wsfleet_tools.chaos.faults import Faults
        from wsfleet_tools.chaos.proxy import FaultProxy, serve_until_stopped

        faults = Faults(
            loss=args.loss,
            latency_s=args.latency_ms / 1000,
            jitter_s=args.jitter_ms / 1000,
            blackhole=args.blackhole,
        )
        host, port = args.target
        proxy = FaultProxy(host, port, listen_port=args.listen_port, faults=faults, seed=args.seed)
        _run(serve_until_stopped(proxy))
    elif command == "capacity":
        import json

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
    elif command in ("pods", "drain", "undrain", "stop", "disconnect", "rollout"):
        from wsfleet_tools import commands as ops_commands

        print(getattr(ops_commands, f"{command}_command")(args))


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


def _exec_envoy(args: argparse.Namespace) -> None:
    """Render a bootstrap for the given xDS server and become Envoy (exec)."""
    import tempfile

    from wsfleet import fleet_ca
    from wsfleet_tools.launcher.envoy_bootstrap import (
        BootstrapParams,
        XdsTls,
        envoy_binary,
        render_bootstrap,
    )

    tls = None
    if args.tls_dir is not None:
        node = fleet_ca.files(args.tls_dir, fleet_ca.node_name(args.node_id))
        tls = XdsTls(node.cert, node.key, fleet_ca.files(args.tls_dir, fleet_ca.CA_NAME).cert)
    params = BootstrapParams(
        node_id=args.node_id,
        node_cluster=args.node_cluster,
        xds_host=socket.gethostbyname(args.xds_host),
        xds_port=args.xds_port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        api_type="DELTA_GRPC" if args.delta else "GRPC",
        region=args.region,
        xds_tls=tls,
        stats_host=args.stats_host,
        stats_port=args.stats_port,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as bootstrap:
        bootstrap.write(render_bootstrap(params))
    binary = str(envoy_binary())
    os.execv(
        binary,
        [
            binary,
            "-c",
            bootstrap.name,
            "--disable-hot-restart",
            "--concurrency",
            str(args.concurrency),
            "--log-level",
            "warning",
        ],
    )


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
