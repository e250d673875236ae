"""``wsfleet pods``, ``drain``, ``disconnect``, ``rollout``: operators' commands."""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from http.client import HTTPConnection
from pathlib import Path
from socket import AF_UNIX, SOCK_STREAM, socket
from typing import Any

from wsfleet.admin_client import AdminClient, AdminError, admin_token
from wsfleet.errors import ConfigError, WsfleetError

BAR_WIDTH = 30


def _client(args: Namespace) -> AdminClient:
    return AdminClient(args.admin_url, admin_token(args.admin_token, args.state_dir))


def pods_command(args: Namespace) -> str:
    pods = _client(args).call("GET", "/pods")["pods"]
    if not pods:
        return "no pods registered"
    rows = [("POD", "STATE", "ADDRESS", "REGION", "CONNS", "HEARTBEAT")]
    for pod in pods:
        rows.append(
            (
                pod["pod_id"],
                pod["state"],
                pod["address"],
                pod["region"],
                str(pod["connections"]),
                f"{pod['heartbeat_age_s']:.1f}s ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


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
        return f"drain {drain_id} started: {pods} (budget {args.budget:g} s)"
    tty = sys.stderr.isatty()
    while True:
        status = client.call("GET", f"/drain/{drain_id}")
        line = (
            f"drain {drain_id} {_bar(status['closed'], status['total'])} "
            f"{status['closed']}/{status['total']} closed, {status['left']} left, "
            f"ETA {status['eta_s']:.1f} s"
        )
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        sys.stderr.flush()
        if status["state"] == "done":
            if tty:
                sys.stderr.write("\n")
            return f"drain {drain_id} done: {pods} ({status['total']} connections closed)"
        time.sleep(0.5)


def disconnect_command(args: Namespace) -> str:
    if bool(args.user) == bool(args.connection):
        raise ConfigError("give --user U or --connection C")
    body: dict[str, Any] = {"code": args.code, "reason": args.reason}
    if args.user:
        body["user_id"] = args.user
    else:
        body["connection_id"] = args.connection
    answer = _client(args).call("POST", "/disconnect", body)
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


def _launcher(state_dir: Path, method: str, body: dict[str, Any] | None = None) -> Any:
    from wsfleet.launcher.control import socket_path

    path = socket_path(state_dir)
    if not path.exists():
        raise ConfigError(f"no running `wsfleet up` in {state_dir} (no {path})")
    connection = _UnixConnection(path)
    try:
        connection.request(
            method,
            "/rollout",
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    except OSError as exc:
        raise WsfleetError(f"cannot reach the launcher at {path}: {exc}") from None
    finally:
        connection.close()
    if response.status >= 300:
        raise AdminError(f"rollout: HTTP {response.status}: {answer.get('error', answer)}")
    return answer


def rollout_command(args: Namespace) -> str:
    body: dict[str, Any] = {
        "budget_s": args.budget,
        "min_success": args.min_success,
        "green_args": args.green_arg,
    }
    if args.sidecars:
        body["sidecars"] = args.sidecars
    _launcher(args.state_dir, "POST", body)
    phase = ""
    while True:
        status = _launcher(args.state_dir, "GET")
        if status["phase"] != phase:
            phase = status["phase"]
            sys.stderr.write(
                f"rollout: {phase} (blue {status['blue']}, green {status['green']}, "
                f"green handshake success {status['success_rate']:.4f})\n"
            )
        if phase in ("done", "rolled_back", "failed"):
            break
        time.sleep(0.5)
    if phase != "done":
        raise WsfleetError(f"rollout {phase}: {status['message']}")
    return f"rollout done: {status['message']}"


__all__ = [
    "disconnect_command",
    "drain_command",
    "pods_command",
    "rollout_command",
]
