"""``wsfleet status``: the fleet page's summary in the terminal.

It reads ``GET /fleet/summary`` on the control-plane admin (the same summary the fleet
page streams; see docs/fleet-page.md) and prints it as tables; ``--watch`` redraws it
every second until Ctrl-C, ``--json`` prints the summary as JSON once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from wsfleet.errors import ConfigError
from wsfleet_tools.admin_client import AdminClient, add_admin_arguments, admin_token, admin_url
from wsfleet_tools.commands import _table

WATCH_INTERVAL_S = 1.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"
CERTIFICATE_WARNING_DAYS = 14  # a certificate that expires sooner is flagged


def register(commands: argparse._SubParsersAction[Any]) -> None:
    status = commands.add_parser(
        "status", help="the fleet at a glance: pods, drains, Envoys, policy, Redis"
    )
    add_admin_arguments(status)  # --json: the summary as JSON, once
    status.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    status.set_defaults(run=status_command)


def status_command(args: argparse.Namespace) -> None:
    if args.json and args.watch:
        raise ConfigError("--json prints the summary once: give --json or --watch, not both")
    client = AdminClient(
        admin_url(args.admin_url, args.state_dir), admin_token(args.admin_token, args.state_dir)
    )
    if args.json:
        print(json.dumps(client.call("GET", "/fleet/summary"), indent=2, sort_keys=True))
        return
    if not args.watch:
        print(render_summary(client.call("GET", "/fleet/summary")))
        return
    try:
        while True:
            text = render_summary(client.call("GET", "/fleet/summary"))
            sys.stdout.write(CLEAR_SCREEN + text + "\n")
            sys.stdout.flush()
            time.sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        sys.stdout.write("\n")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _clock(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%H:%M:%S UTC")


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as the terminal shows it: a headline, then pods, drains, Envoys and
    certificates as tables (a section with nothing in it says so in one line)."""
    totals, redis = summary["totals"], summary["redis"]
    redis_text = f"ok ({redis['latency_ms']} ms)" if redis["ok"] else f"DOWN: {redis['error']}"
    lines = [
        f"fleet at {_clock(summary['at'])} · policy {summary['policy']['version']} · "
        f"redis {redis_text}",
        f"pods {totals['pods']} ({totals['serving']} serving) · connections "
        f"{totals['connections']} · handshakes/s {_rate(totals['accepted_per_s'])}",
        "",
    ]
    if summary["pods"]:
        rows: list[tuple[str, ...]] = [
            ("POD", "STATE", "CONNS", "HS/S", "REFUSED", "RTT P50/P99", "HEARTBEAT")
        ]
        for pod in summary["pods"]:
            refused = ", ".join(f"{k} {v}" for k, v in pod["refused"].items()) or "none"
            rtt = pod["ping_rtt"]
            rows.append(
                (
                    pod["pod_id"],
                    pod["state"],
                    str(pod["connections"]),
                    _rate(pod["accepted_per_s"]),
                    refused,
                    f"{_ms(rtt['p50_s'])}/{_ms(rtt['p99_s'])}"
                    if rtt
                    else pod["stats_error"] or "-",
                    f"{pod['heartbeat_age_s']:.1f}s ago",
                )
            )
        lines.append(_table(rows))
    else:
        lines.append("no pods registered")
    lines.append("")
    if summary["drains"]:
        rows = [("DRAIN", "PODS", "STATE", "BUDGET USED", "CLOSED")]
        for drain in summary["drains"]:
            rows.append(
                (
                    drain["drain_id"] or "(pod's own)",
                    ", ".join(f"{p} {s}" for p, s in drain["pods"].items()),
                    drain["state"],
                    f"{drain['elapsed_s']:.0f}/{drain['budget_s']:g}s ({drain['budget_used']:.0%})",
                    f"{drain['closed']}/{drain['total']}",
                )
            )
        lines.append(_table(rows))
    else:
        lines.append("no drain in progress")
    lines.append("")
    if summary["envoys"]:
        rows = [("ENVOY", "CLUSTER", "STREAM", "ACKED", "LAST NACK")]
        for envoy in summary["envoys"]:
            nack = envoy["last_nack"]
            rows.append(
                (
                    envoy["node_id"],
                    envoy["cluster"],
                    envoy["protocol"] + ("" if envoy["connected"] else " (gone)"),
                    " ".join(f"{t}={v or '-'}" for t, v in envoy["acked"].items()),
                    f"{nack['type']} {nack['version']}: {nack['message'][:60]}" if nack else "none",
                )
            )
        lines.append(_table(rows))
    else:
        lines.append("no Envoy connected")
    for cert in summary["certificates"]:
        days = cert["expires_in_s"] / 86400
        flag = " (RENEW)" if days < CERTIFICATE_WARNING_DAYS else ""
        lines.append(f"certificate {cert['name']}: expires in {days:.1f} days{flag}")
    return "\n".join(lines)
