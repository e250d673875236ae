"""The two clients side by side (``--client picows``): the load generators' figures and the
outside client's, per target, and why they differ, from what was measured in the same run.

A surge is limited by whichever core is saturated. When the clients' core is (the load
generators: Python, aiohttp, a token per handshake), every target is held near the same
client-side ceiling and the ratios between targets are pulled toward 1. When the server core
is (a native client with many handshakes in flight), the rate follows the server's CPU per
handshake, so a ratio approaches the inverse ratio of those CPU costs. And the load
generators' surge clock starts before they do (process start-up, imports): a start-up that
is a good share of a short surge lowers every target's rate and pulls the ratios toward 1
too; the outside client's clock starts once it is up and its tokens are minted. Pure
functions."""

from __future__ import annotations

from typing import Any

from benchmarks.report import fmt_ratio, ms, ratio, table

BASELINE = "envoy+bare"
SATURATED = 0.85  # a core this busy (share of its time) is what limits the rate
LABELS = {
    "client": "client-bound",
    "server": "server-bound",
    "contended": "cores shared with other work",
    "neither": "latency-bound",
}
START_UP_SHARE = 0.1  # a client start-up this share of the surge's clock moves its rate


def _saturated(share: float | None) -> bool:
    return share is not None and share >= SATURATED


def _bound(figures: dict[str, Any]) -> str:
    """Which side limited the rate: "client" or "server" (our processes saturated its
    core), "contended" (a core was saturated, mostly by other processes on the machine),
    or "neither" (latency-bound: too few handshakes in flight)."""
    if _saturated(figures["client_cores_busy"]):
        return "client"
    if _saturated(figures["server_cores_busy"]):
        return "server"
    whole = figures.get("cores_busy_all_processes", {})
    if _saturated(whole.get("clients")) or _saturated(whole.get("servers")):
        return "contended"
    return "neither"


def _surge(figures: dict[str, Any], in_flight: int, request: int | None) -> dict[str, Any]:
    return {
        "handshakes_per_s": figures["handshakes_per_s"],
        "latency_p99_s": figures["latency_s"]["p99"],
        "client_cores_busy": figures["client_cores_busy"],
        "server_cores_busy": figures["server_cores_busy"],
        "server_cpu_ms_per_handshake": figures["server_cpu_ms_per_handshake"],
        "in_flight": in_flight,
        "request_bytes": request,
        "client_start_s": figures.get("client_start_s", 0.0),
        "cores_busy_all_processes": figures.get("cores_busy_all_processes", {}),
        "bound": _bound(figures),
    }


def side_by_side(
    results: list[dict[str, Any]], loadgen_in_flight: int, request_bytes: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """target -> {"loadgen": surge figures, "picows": surge figures, ratios to the baseline,
    echo figures of both}. Rows without an outside measurement are left out."""
    rows = {r["target"]: r for r in results if "outside" in r}
    base = rows.get(BASELINE)
    compared = {}
    for name, row in rows.items():
        outside = row["outside"]
        by_client = {
            "loadgen": _surge(row["surge"], loadgen_in_flight, request_bytes.get("loadgen")),
            "picows": _surge(
                outside["surge"], outside["surge"]["in_flight"], request_bytes.get("picows")
            ),
        }
        if base is not None:
            by_client["loadgen"]["ratio_to_baseline"] = ratio(
                row["surge"]["handshakes_per_s"], base["surge"]["handshakes_per_s"]
            )
            by_client["loadgen"]["ratio_to_baseline_after_start"] = ratio(
                row["surge"]["handshakes_per_s_after_start"],
                base["surge"]["handshakes_per_s_after_start"],
            )
            by_client["picows"]["ratio_to_baseline"] = ratio(
                outside["surge"]["handshakes_per_s"], base["outside"]["surge"]["handshakes_per_s"]
            )
            # the ratio a server-bound surge tends to: baseline CPU per handshake / ours
            by_client["picows"]["cpu_ratio_to_baseline"] = ratio(
                base["outside"]["surge"]["server_cpu_ms_per_handshake"],
                outside["surge"]["server_cpu_ms_per_handshake"],
            )
        compared[name] = {
            **by_client,
            "picows_cpu_by_process": {
                "ms_per_handshake": outside["surge"].get("server_cpu_ms_per_handshake_by_process"),
                "us_per_echo_message": outside["echo"].get("server_cpu_us_per_message_by_process"),
            },
            "loadgen_seconds": row["surge"]["seconds"],
            "echo": {
                "loadgen_messages_per_s": row["throughput"]["messages_per_s"],
                "loadgen_messages_per_cpu_s": row["throughput"]["messages_per_cpu_s"],
                "picows_messages_per_s": outside["echo"]["messages_per_s"],
                "picows_messages_per_cpu_s": outside["echo"]["messages_per_cpu_s"],
                "picows_client_cores_busy": outside["echo"]["client_cores_busy"],
            },
        }
    return compared


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def short_ratio(value: float | None) -> str:
    """``0.90x``, or ``n/a``: the ratios of the explanations and the rounds."""
    return "n/a" if value is None else f"{value:.2f}x"


def explain(compared: dict[str, dict[str, Any]]) -> list[str]:
    """One line per target saying which side limited each client's surge, and for the
    wsfleet rows why their ratio to the baseline moved."""
    lines = []
    for name, both in compared.items():
        ours, native = both["loadgen"], both["picows"]
        line = (
            f"{name}: load generators {ours['handshakes_per_s']:.0f} hs/s ({LABELS[ours['bound']]}:"
            f" clients {_pct(ours['client_cores_busy'])}, server {_pct(ours['server_cores_busy'])}"
            f" busy); picows {native['handshakes_per_s']:.0f} hs/s ({LABELS[native['bound']]}:"
            f" client {_pct(native['client_cores_busy'])}, server"
            f" {_pct(native['server_cores_busy'])} busy)"
        )
        if name.startswith("wsfleet") and "ratio_to_baseline" in ours:
            line += (
                f"; / {BASELINE}: {short_ratio(ours['ratio_to_baseline'])} vs"
                f" {short_ratio(native['ratio_to_baseline'])}"
            )
            if ours["client_start_s"] >= START_UP_SHARE * both["loadgen_seconds"]:
                line += (
                    f" — the load generators' clock includes their start-up"
                    f" ({ours['client_start_s']:.2f} s of {both['loadgen_seconds']:.2f} s;"
                    f" without it {short_ratio(ours.get('ratio_to_baseline_after_start'))})"
                )
            if ours["bound"] == "client" and native["bound"] == "server":
                line += (
                    " — the load generators' ceiling hides the server cost; server CPU per"
                    f" handshake {native['server_cpu_ms_per_handshake']:.3f} ms, baseline's"
                    f" / ours = {short_ratio(native.get('cpu_ratio_to_baseline'))}"
                )
        if "contended" in (ours["bound"], native["bound"]):
            whole = native["cores_busy_all_processes"]
            line += (
                f"; cores busy with every process on them (picows run): clients"
                f" {_pct(whole.get('clients'))}, servers {_pct(whole.get('servers'))}:"
                " other work on the machine took the rest"
            )
        lines.append(line)
    return lines


def readable(compared: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table, then the explanation lines."""
    rows = []
    for name, both in compared.items():
        for client in ("loadgen", "picows"):
            figures = both[client]
            echo = both["echo"]
            rows.append(
                (
                    name,
                    client,
                    figures["handshakes_per_s"],
                    fmt_ratio(figures.get("ratio_to_baseline")),
                    ms(figures["latency_p99_s"]),
                    _pct(figures["client_cores_busy"]),
                    _pct(figures["server_cores_busy"]),
                    figures["server_cpu_ms_per_handshake"],
                    figures["in_flight"],
                    figures["request_bytes"],
                    echo[f"{client}_messages_per_s"],
                    echo[f"{client}_messages_per_cpu_s"],
                )
            )
    text = table(
        rows,
        [
            "target",
            "client",
            "hs/s",
            f"/ {BASELINE}",
            "hs p99 ms",
            "client busy",
            "server busy",
            "server ms/hs",
            "hs in flight",
            "request B",
            "echo msg/s",
            "echo per CPU-s",
        ],
    )
    return (
        "two clients, same run (surge, echo):\n"
        + text
        + "\n"
        + "\n".join(explain(compared))
        + "\n\n"
        + _by_process(compared)
    )


def _by_process(compared: dict[str, dict[str, Any]]) -> str:
    """Where the server CPU of the picows surge and echo went, process by process."""
    lines = ["server CPU by process (picows): ms per handshake | µs per echo message"]
    for name, both in compared.items():
        split = both.get("picows_cpu_by_process") or {}
        for key, unit in (("ms_per_handshake", "ms/hs"), ("us_per_echo_message", "µs/msg")):
            figures = split.get(key) or {}
            shown = ", ".join(f"{role} {value}" for role, value in figures.items()) or "n/a"
            lines.append(f"  {name:<12} {unit:<7} {shown}")
    return "\n".join(lines)
