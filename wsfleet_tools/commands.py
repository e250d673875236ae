"""``wsfleet pods``, ``drain``, ``undrain``, ``stop``, ``disconnect``, ``rollout``.

Each finds the fleet from ``--state-dir`` (the admin URL and token that ``wsfleet up``
recorded there) unless told otherwise, prints a readable answer or, with ``--json``,
the server's answer as JSON, and reports a refusal with the server's reason verbatim.
"""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from http.client import HTTPConnection
from pathlib import Path
from socket import AF_UNIX, SOCK_STREAM, socket
from typing import Any

from wsfleet.errors import ConfigError, UnreachableError, WsfleetError
from wsfleet_tools.admin_client import AdminClient, AdminError, admin_token, admin_url
from wsfleet_tools.progress import ProgressLines

BAR_WIDTH = 30
POLL_S = 0.5


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
    "rollout_command",
    "stop_command",
    "undrain_command",
]
