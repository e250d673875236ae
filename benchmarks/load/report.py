"""What ``load`` prints and saves: the ratios of each wsfleet row to each peer, the table,
the side-by-side of the two clients (``--client picows``), the plots, and the capacity
model's inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.load.scenarios.keepalive import PING_PROBE
from benchmarks.load.targets import PEERS
from benchmarks.report import fmt_ratio, ms, ratio, table


def plots(results: list[dict[str, Any]], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        xs, ys = zip(*result["timeline"], strict=True) if result["timeline"] else ((), ())
        axis.plot(xs, ys, label=result["target"])
    axis.set(xlabel="seconds", ylabel="open connections", title="connections over time (surge)")
    axis.legend()
    path = directory / "load-connections.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    figure, axis = plt.subplots(figsize=(7, 4))
    names = [r["target"] for r in results]
    for offset, key in enumerate(("p50", "p99", "max")):
        axis.bar(
            [i + offset * 0.27 for i in range(len(names))],
            [ms(r["echo_rtt_s"][key]) or 0.0 for r in results],
            width=0.27,
            label=key,
        )
    axis.set_xticks([i + 0.27 for i in range(len(names))], names)
    axis.set(ylabel="ms", title="echo round trip with every connection held")
    axis.set_yscale("log")
    axis.legend()
    path = directory / "load-rtt.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    paths.append(path)
    plt.close("all")
    return paths


# figure -> (where it is in a result row, the smallest denominator that is a measurement)
RATIO_FIGURES: dict[str, tuple[tuple[str, ...], float]] = {
    "kb_per_connection": (("sustained", "kb_per_connection_total"), 0.01),
    "handshakes_per_s": (("surge", "handshakes_per_s"), 1e-6),
    "echo_rtt_p50": (("echo_rtt_s", "p50"), 1e-6),
    "echo_rtt_p99": (("echo_rtt_s", "p99"), 1e-6),
    "messages_per_s": (("throughput", "messages_per_s"), 1e-6),
    "messages_per_cpu_s": (("throughput", "messages_per_cpu_s"), 1e-6),
    "fanout_deliveries_per_s": (("fanout", "deliveries_per_s"), 1e-6),
    "fanout_deliveries_per_cpu_s": (("fanout", "deliveries_per_cpu_s"), 1e-6),
    "keepalive_ping_rtt_p50": (("keepalive", "ping_rtt_s", "p50"), 1e-6),
    "keepalive_ping_rtt_p99": (("keepalive", "ping_rtt_s", "p99"), 1e-6),
}


def _dig(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """wsfleet row -> peer -> figure -> ratio (None: n/a)."""
    by_name = {r["target"]: r for r in results}
    return {
        ours["target"]: {
            peer: {
                figure: ratio(_dig(ours, path), _dig(by_name.get(peer, {}), path), tiny)
                for figure, (path, tiny) in RATIO_FIGURES.items()
            }
            for peer in PEERS
        }
        for ours in results
        if ours["target"].startswith("wsfleet")
    }


def readable(results: list[dict[str, Any]], by_row: dict[str, Any], pinned: bool) -> str:
    rows = [
        (
            r["target"],
            r["connections"],
            f"{r['surge']['success']:.2%}",
            r["surge"]["handshakes_per_s"],
            ms(r["surge"]["latency_s"]["p99"]),
            f"{r['surge']['client_cores_busy']:.0%}",
            sum(r["surge"]["errors"].values()),
            r["sustained"]["kb_per_connection_total"],
            ", ".join(f"{k} {v:.1f}" for k, v in r["sustained"]["kb_per_connection"].items()),
            ms(r["echo_rtt_s"]["p50"]),
            ms(r["echo_rtt_s"]["p99"]),
            r["throughput"]["messages_per_s"],
            r["throughput"]["messages_per_cpu_s"],
            f"{r['fanout']['delivered']}/{r['fanout']['expected']}",
            r["fanout"]["deliveries_per_s"],
            r["fanout"]["deliveries_per_cpu_s"],
        )
        for r in results
    ]
    text = table(
        rows,
        [
            "target",
            "conns",
            "surge ok",
            "hs/s",
            "hs p99 ms",
            "clients busy",
            "errors",
            "KB/conn",
            "KB/conn by process",
            "echo p50 ms",
            "echo p99 ms",
            "msg/s",
            "msg per CPU-s",
            "fan-out got",
            "fan-out/s",
            "fan-out per CPU-s",
        ],
    )
    keep = [r for r in results if r["keepalive"].get("held") is not None]
    if keep:
        text += (
            "\n\nkeep-alive: "
            + PING_PROBE
            + "\n"
            + table(
                [
                    (
                        r["target"],
                        f"{r['keepalive']['open_at_end']}/{r['keepalive']['held_requested']}",
                        r["keepalive"]["rate_per_s"],
                        r["keepalive"]["echo_per_s"],
                        ms(r["keepalive"]["ping_rtt_s"]["p50"]),
                        ms(r["keepalive"]["ping_rtt_s"]["p99"]),
                        r["keepalive"]["pings_lost"],
                        ms(r["keepalive"]["echo_rtt_s"]["p50"]),
                        ms(r["keepalive"]["echo_rtt_s"]["p99"]),
                        r["keepalive"]["server_cores_busy"],
                    )
                    for r in keep
                ],
                [
                    "target",
                    "held",
                    "echo msg/s asked",
                    "echo msg/s got",
                    "ping p50 ms",
                    "ping p99 ms",
                    "pings lost",
                    "echo p50 ms",
                    "echo p99 ms",
                    "server cores busy",
                ],
            )
        )
    columns = [(row, peer) for row in by_row for peer in PEERS]
    text += "\n\n" + table(
        [
            (figure, *(fmt_ratio(by_row[row][peer][figure]) for row, peer in columns))
            for figure in RATIO_FIGURES
        ],
        ["ratio", *(f"{row} / {peer}" for row, peer in columns)],
    )
    text += "\n(n/a: nothing measurable to divide by at this size)"
    text += f"\npinned: {'load generators on core 0, servers on core 1' if pinned else 'no'}"
    return text


def measured(ours: dict[str, Any]) -> dict[str, float]:
    """The capacity model's inputs (wsfleet_tools.capacity.Measured) from wsfleet v1's run (as the
    SDKs speak); a figure that is n/a at this size is left out (the model keeps its own)."""
    kb = ours["sustained"]["kb_per_connection"]
    handshakes = ours["surge"]["handshakes_per_cpu_s"]
    messages = ours["throughput"]["messages_per_cpu_s_by_process"]
    redis_messages = messages.get("redis")
    figures = {
        "sidecar_kb_per_connection": kb.get("sidecar"),
        "envoy_kb_per_connection": kb.get("envoy"),
        "redis_bytes_per_connection": kb["redis"] * 1024 if "redis" in kb else None,
        "sidecar_handshakes_per_s": handshakes.get("sidecar"),
        "envoy_handshakes_per_s_per_worker": handshakes.get("envoy"),
        "sidecar_messages_per_s": messages.get("sidecar"),
        "redis_bytes_per_replayed_message": ours["throughput"]["rss_growth_bytes_per_message"].get(
            "redis"
        ),
        # an echo costs Redis 6 pipelined commands: the client's message (HSET last_cseq,
        # PEXPIRE) and the reply (XADD to the replay buffer, HSET last_seq, 2 PEXPIRE)
        "redis_ops_per_s_per_core": redis_messages * 6 if redis_messages is not None else None,
    }
    return {key: value for key, value in figures.items() if value is not None}
