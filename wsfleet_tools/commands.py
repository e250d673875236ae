"""``wsfleet pods``, ``drain``, ``undrain``, ``stop``, ``disconnect``, ``rollout``.

Each finds the fleet from ``--state-dir`` (the admin URL and token that ``wsfleet up``
recorded there) unless told otherwise, prints a readable answer or, with ``--json``,
the server's answer as JSON, and reports a refusal with the server's reason verbatim.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from argparse import Namespace
from http.client import HTTPConnection
from pathlib import Path
from socket import AF_UNIX, SOCK_STREAM, socket
from typing import Any

from wsfleet.arg_types import non_negative_float, positive_int
from wsfleet.errors import ConfigError, UnreachableError, WsfleetError
from wsfleet_tools.admin_client import (
    AdminClient,
    AdminError,
    add_admin_arguments,
    admin_token,
    admin_url,
)
from wsfleet_tools.cli_options import add_state_dir_argument, printing
from wsfleet_tools.progress import ProgressLines

BAR_WIDTH = 30
POLL_S = 0.5


def register(commands: argparse._SubParsersAction[Any]) -> None:
    pods = commands.add_parser(
        "pods", help="list the gateway pods: serving, draining, drained, gone"
    )
    add_admin_arguments(pods)
    pods.set_defaults(run=printing(pods_command))

    drain = commands.add_parser("drain", help="drain pods: paced 1012 closes within a budget")
    drain.add_argument("pods", nargs="*", metavar="POD", help="pod ids")
    drain.add_argument("--region", help="drain every pod of this region")
    drain.add_argument(
        "--budget", type=non_negative_float, default=30.0, help="seconds (default 30)"
    )
    drain.add_argument("--wait", action="store_true", help="follow progress until done")
    add_admin_arguments(drain)
    drain.set_defaults(run=printing(drain_command))

    undrain = commands.add_parser("undrain", help="put a draining or drained pod back to serve")
    undrain.add_argument("pod", metavar="POD")
    add_admin_arguments(undrain)
    undrain.set_defaults(run=printing(undrain_command))

    stop = commands.add_parser("stop", help="stop one pod of the local fleet (`wsfleet up`)")
    stop.add_argument("pod", metavar="POD")
    stop.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_state_dir_argument(stop)
    stop.set_defaults(run=printing(stop_command))

    disconnect = commands.add_parser("disconnect", help="close a user's or a connection's sockets")
    disconnect.add_argument("--user", help="every connection of this user, on any pod")
    disconnect.add_argument("--connection", help="one connection id")
    disconnect.add_argument("--code", type=int, default=1000, help="close code (default 1000)")
    disconnect.add_argument("--reason", default="disconnected by operator")
    add_admin_arguments(disconnect)
    disconnect.set_defaults(run=printing(disconnect_command))

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
    add_state_dir_argument(rollout)
    rollout.set_defaults(run=printing(rollout_command))


def _client(args: Namespace) -> AdminClient:
    return AdminClient(
        admin_url(args.admin_url, args.state_dir), admin_token(args.admin_token, args.state_dir)
    )


def _json(answer: Any) -> str:
    return json.dumps(answer, indent=2, sort_keys=True)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def pods_command(args: Namespace) -> str:
    pods = _client(args).call("GET", "/pods")["pods"]
    if args.json:
        return _json(pods)
    if not pods:
        return "no pods registered"
    rows: list[tuple[str, ...]] = [
        ("POD", "STATE", "ADDRESS", "POOL", "REGION", "CONNS", "HEARTBEAT")
    ]
    for pod in pods:
        if pod["state"] == "gone":
            seen = f"left {pod['gone_s_ago']:.0f}s ago"
        else:
            seen = f"{pod['heartbeat_age_s']:.1f}s ago"
        rows.append(
            (
                pod["pod_id"],
                pod["state"],
                pod["address"],
                pod["pool"],
                pod["region"],
                str(pod["connections"]),
                seen,
            )
        )
    return _table(rows)


def _bar(done: int, total: int) -> str:
    filled = BAR_WIDTH if total == 0 else int(BAR_WIDTH * done / total)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def drain_command(args: Namespace) -> str:
    if bool(args.pods) == bool(args.region):
        raise ConfigError("name pods to drain, or --region R (not both)")
    body: dict[str, Any] = {"budget_s": args.budget}
    if args.region:
        body["region"] = args.region
    else:
        body["pods"] = args.pods
    client = _client(args)
    started = client.call("POST", "/drain", body)
    drain_id = started["drain_id"]
    pods = ", ".join(sorted(started["pods"]))
    if not args.wait:
        return (
            _json(started)
            if args.json
            else f"drain {drain_id} started: {pods} (budget {args.budget:g} s)"
        )
    progress = ProgressLines(tty=sys.stderr.isatty())
    while True:
        status = client.call("GET", f"/drain/{drain_id}")
        finished = status["state"] == "done"
        if not args.json and (finished or progress.due(status["closed"], status["total"])):
            line = (
                f"drain {drain_id} {_bar(status['closed'], status['total'])} "
                f"{status['closed']}/{status['total']} closed, {status['left']} left, "
                f"ETA {status['eta_s']:.1f} s"
            )
            sys.stderr.write(progress.render(line))
            sys.stderr.flush()
        if finished:
            if progress.tty and not args.json:
                sys.stderr.write("\n")
            failed = {
                pod: answer.get("error", "failed")
                for pod, answer in status["pods"].items()
                if answer.get("state") == "error"
            }
            if args.json:
                text = _json(status)
            else:
                text = f"drain {drain_id} done: {pods} ({status['total']} connections closed)"
            if failed:
                print(text)
                raise AdminError(f"drain {drain_id}: pod(s) failed: {failed}")
            return text
        time.sleep(POLL_S)


def undrain_command(args: Namespace) -> str:
    answer = _client(args).call("POST", "/undrain", {"pod": args.pod})
    if args.json:
        return _json(answer)
    return f"{args.pod}: {answer['previous_state']} -> serving"


def disconnect_command(args: Namespace) -> str:
    if bool(args.user) == bool(args.connection):
        raise ConfigError("give --user U or --connection C")
    body: dict[str, Any] = {"code": args.code, "reason": args.reason}
    if args.user:
        body["user_id"] = args.user
    else:
        body["connection_id"] = args.connection
    answer = _client(args).call("POST", "/disconnect", body)
    if args.json:
        return _json(answer)
    failed = answer.get("failures") or {}
    note = f" ({len(failed)} pod(s) failed: {failed})" if failed else ""
    return f"closed {answer['closed']} connection(s) on {', '.join(answer['pods'])}{note}"


class _UnixConnection(HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket(AF_UNIX, SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def _launcher(state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the launcher of the `wsfleet up` that runs from ``state_dir``."""
    from wsfleet_tools.launcher.control import socket_path

    where = socket_path(state_dir)
    if not where.exists():
        raise UnreachableError(f"no running `wsfleet up` in {state_dir} (no {where})")
    connection = _UnixConnection(where)
    try:
        connection.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    except OSError as exc:
        raise UnreachableError(f"cannot reach the launcher at {where}: {exc}") from None
    finally:
        connection.close()
    if response.status >= 300:
        raise AdminError(f"{method} {path}: HTTP {response.status}: {answer.get('error', answer)}")
    return answer


def stop_command(args: Namespace) -> str:
    answer = _launcher(args.state_dir, "POST", "/stop", {"pod": args.pod})
    if args.json:
        return _json(answer)
    return f"{args.pod}: stopped (exit code {answer['exit_code']})"


def rollout_command(args: Namespace) -> str:
    if args.envoys:
        return _envoy_rollout(args)
    body: dict[str, Any] = {
        "budget_s": args.budget,
        "min_success": args.min_success,
        "green_args": args.green_arg,
    }
    if args.sidecars:
        body["sidecars"] = args.sidecars
    _launcher(args.state_dir, "POST", "/rollout", body)
    phase = ""
    while True:
        status = _launcher(args.state_dir, "GET", "/rollout")
        if status["phase"] != phase:
            phase = status["phase"]
            if not args.json:
                sys.stderr.write(
                    f"rollout: {phase} (blue {status['blue']}, green {status['green']}, "
                    f"handshake success {status['success_rate']:.4f} "
                    f"of {status['handshakes']})\n"
                )
        if phase in ("done", "rolled_back", "failed"):
            break
        time.sleep(POLL_S)
    text = _json(status) if args.json else f"rollout done: {status['message']}"
    if phase != "done":
        if args.json:
            print(text)
        raise WsfleetError(f"rollout {phase}: {status['message']}")
    return text


def _envoy_rollout(args: Namespace) -> str:
    """``wsfleet rollout --envoys``: the launcher replaces the L7 Envoys one at a time."""
    if args.sidecars or args.green_arg:
        raise ConfigError("--envoys rolls the Envoys: --sidecars and --green-arg are for pods")
    _launcher(args.state_dir, "POST", "/rollout/envoys", {"budget_s": args.budget})
    seen = ("", "")
    while True:
        status = _launcher(args.state_dir, "GET", "/rollout/envoys")
        if (status["phase"], status["envoy"]) != seen:
            seen = (status["phase"], status["envoy"])
            if not args.json:
                sys.stderr.write(
                    f"rollout: {status['phase']} {status['envoy']}"
                    f" (replaced {status['replaced']})\n"
                )
        if status["phase"] in ("done", "failed"):
            break
        time.sleep(POLL_S)
    text = _json(status) if args.json else f"rollout done: {status['message']}"
    if status["phase"] != "done":
        if args.json:
            print(text)
        raise WsfleetError(f"Envoy rollout failed: {status['message']}")
    return text


__all__ = [
    "disconnect_command",
    "drain_command",
    "pods_command",
    "register",
    "rollout_command",
    "stop_command",
    "undrain_command",
]
