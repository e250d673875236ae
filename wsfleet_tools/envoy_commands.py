"""``wsfleet envoys``, ``wsfleet envoys drain``, ``wsfleet envoys undrain``.

Draining an Envoy (docs/operations.md, "Draining an Envoy"): its ``/edge/ready`` turns to
503 and it refuses new requests at once; ``--delist`` seconds later the gateways close the
connections that came through it with 1012 and a retry hint, paced over ``--budget``.
Like ``wsfleet drain``, each finds the fleet from ``--state-dir`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from wsfleet.errors import WsfleetError
from wsfleet_tools.admin_client import add_admin_arguments
from wsfleet_tools.commands import POLL_S, _client, _json, _table
from wsfleet_tools.progress import ProgressLines

WAIT_SLACK_S = 60.0  # --wait gives up this long after delist + budget should have ended


class EnvoyDrainTimeout(WsfleetError):
    """``--wait`` saw connections left long after the budget."""


def register(commands: argparse._SubParsersAction[Any]) -> None:
    envoys = commands.add_parser("envoys", help="the Envoys: list, drain, undrain")
    add_admin_arguments(envoys)
    envoys.set_defaults(run=lambda args: print(envoys_command(args)))
    actions = envoys.add_subparsers(dest="envoys_action", metavar="ACTION")

    drain = actions.add_parser(
        "drain", help="drain an Envoy (or a zone's): 503 to new requests, paced 1012 closes"
    )
    drain.add_argument("target", metavar="ZONE_OR_NODE", help="an Envoy node id, or a zone")
    drain.add_argument(
        "--budget", type=float, default=30.0, help="seconds to close its connections over (30)"
    )
    drain.add_argument(
        "--delist",
        type=float,
        default=2.0,
        help="seconds between refusing new connections and the first close (2)",
    )
    drain.add_argument("--wait", action="store_true", help="show progress; return when drained")
    add_admin_arguments(drain)
    drain.set_defaults(run=lambda args: print(drain_command(args)))

    undrain = actions.add_parser("undrain", help="an Envoy serves again (after its restart)")
    undrain.add_argument("node", help="the Envoy's node id")
    add_admin_arguments(undrain)
    undrain.set_defaults(run=lambda args: print(undrain_command(args)))


def envoys_command(args: argparse.Namespace) -> str:
    envoys = _client(args).call("GET", "/envoys")["envoys"]
    if args.json:
        return _json(envoys)
    if not envoys:
        return "no Envoy has connected to the control plane"
    rows: list[tuple[str, ...]] = [("NODE", "ZONE", "REGION", "CONTROL PLANE", "STATE")]
    for envoy in envoys:
        drain = envoy.get("drain")
        state = "serving" if drain is None else f"draining (budget {drain['budget_s']:g} s)"
        replica = envoy.get("replica") if envoy.get("connected") else None
        rows.append(
            (
                envoy["node"],
                envoy.get("zone") or "-",
                envoy.get("region") or "-",
                replica or "(not connected)",
                state,
            )
        )
    return _table(rows)


def _selector(client: Any, target: str) -> dict[str, str]:
    """``{"node": target}`` if an Envoy has that node id, else ``{"zone": target}``."""
    nodes = {envoy["node"] for envoy in client.call("GET", "/envoys")["envoys"]}
    return {"node": target} if target in nodes else {"zone": target}


def _line(view: dict[str, Any]) -> str:
    what = view["node"] or f"zone {view['zone']}"
    return f"envoy drain {what}: {view['state']}, {view['remaining']} connections left"


def drain_command(args: argparse.Namespace) -> str:
    client = _client(args)
    body: dict[str, Any] = {
        **_selector(client, args.target),
        "budget_s": args.budget,
        "delist_s": args.delist,
    }
    view = client.call("POST", "/envoys/drain", body)
    if not args.wait:
        return _json(view) if args.json else _line(view)
    progress = ProgressLines(tty=sys.stderr.isatty())
    name = view["node"] or view["zone"]
    give_up = time.monotonic() + args.delist + args.budget + WAIT_SLACK_S
    shown = ""
    while True:
        view = client.call("GET", f"/envoys/drain/{name}")
        line = _line(view)
        if not args.json and line != shown:
            sys.stderr.write(progress.render(line))
            sys.stderr.flush()
            shown = line
        if view["state"] == "drained":
            if progress.tty and not args.json:
                sys.stderr.write("\n")
            return _json(view) if args.json else line
        if time.monotonic() > give_up:
            raise EnvoyDrainTimeout(
                f"{line} after the budget ({view.get('errors') or 'no errors'})"
            )
        time.sleep(POLL_S)


def undrain_command(args: argparse.Namespace) -> str:
    answer = _client(args).call("POST", "/envoys/undrain", {"node": args.node})
    return _json(answer) if args.json else f"{args.node}: serving"
