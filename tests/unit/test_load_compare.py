"""``load --client picows``: the two clients' surge figures side by side, and the reason
given for a ratio that moves between them (benchmarks/load/compare.py, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.load import compare
from benchmarks.load.generators import core_busy


def surge(rate: float, client_busy: float, server_busy: float, cpu_ms: float) -> dict[str, Any]:
    return {
        "handshakes_per_s": rate,
        "latency_s": {"p99": 0.2},
        "client_cores_busy": client_busy,
        "server_cores_busy": server_busy,
        "server_cpu_ms_per_handshake": cpu_ms,
        "in_flight": 256,
    }


def row(
    name: str, loadgen: dict[str, Any], picows: dict[str, Any] | None, start_s: float = 0.0
) -> dict[str, Any]:
    seconds = 3000 / loadgen["handshakes_per_s"]  # 3,000 handshakes
    loadgen = {
        **loadgen,
        "seconds": seconds,
        "client_start_s": start_s,
        "handshakes_per_s_after_start": 3000 / (seconds - start_s),
    }
    figures: dict[str, Any] = {
        "target": name,
        "surge": loadgen,
        "throughput": {"messages_per_s": 1000.0, "messages_per_cpu_s": 9000.0},
    }
    if picows is not None:
        figures["outside"] = {
            "surge": picows,
            "echo": {
                "messages_per_s": 5000.0,
                "messages_per_cpu_s": 9500.0,
                "client_cores_busy": 0.3,
            },
        }
    return figures


# the case of issue #26: the load generators' core saturated for both targets (ratio near
# 1), the native client's not, so the server core and its CPU per handshake decide
RESULTS = [
    row("wsfleet raw", surge(900, 0.95, 0.6, 0.55), surge(1200, 0.3, 0.97, 0.80)),
    row("envoy+bare", surge(1000, 0.93, 0.4, 0.35), surge(2000, 0.45, 0.95, 0.48)),
    row("bare", surge(1100, 0.9, 0.2, 0.15), None),
]


def test_side_by_side_puts_both_clients_ratios_to_the_baseline_beside_each_other() -> None:
    compared = compare.side_by_side(RESULTS, 800, {"loadgen": 420, "picows": 380})
    assert set(compared) == {"wsfleet raw", "envoy+bare"}  # bare had no outside run
    ours = compared["wsfleet raw"]
    assert ours["loadgen"]["ratio_to_baseline"] == pytest.approx(0.9)
    assert ours["picows"]["ratio_to_baseline"] == pytest.approx(0.6)
    assert ours["picows"]["cpu_ratio_to_baseline"] == pytest.approx(0.48 / 0.80)
    assert (ours["loadgen"]["in_flight"], ours["picows"]["in_flight"]) == (800, 256)
    assert (ours["loadgen"]["request_bytes"], ours["picows"]["request_bytes"]) == (420, 380)
    assert (ours["loadgen"]["bound"], ours["picows"]["bound"]) == ("client", "server")
    assert ours["echo"]["picows_messages_per_s"] == 5000.0


def test_the_explanation_names_the_saturated_side_and_the_cpu_ratio() -> None:
    lines = compare.explain(compare.side_by_side(RESULTS, 800, {}))
    [ours] = [line for line in lines if line.startswith("wsfleet raw")]
    assert "load generators 900 hs/s (client-bound: clients 95%" in ours
    assert "picows 1200 hs/s (server-bound: client 30%, server 97% busy)" in ours
    assert "0.90x vs 0.60x" in ours
    assert "hides the server cost" in ours and "= 0.60x" in ours
    [peer] = [line for line in lines if line.startswith("envoy+bare")]
    assert "hides" not in peer  # a peer is the baseline, not explained against itself


def test_no_ceiling_is_claimed_when_neither_core_was_saturated() -> None:
    calm = [
        row("wsfleet raw", surge(300, 0.5, 0.5, 0.5), surge(300, 0.2, 0.5, 0.5)),
        row("envoy+bare", surge(300, 0.5, 0.3, 0.3), surge(300, 0.2, 0.3, 0.3)),
    ]
    compared = compare.side_by_side(calm, 800, {})
    assert compared["wsfleet raw"]["loadgen"]["bound"] == "neither"
    assert "hides" not in " ".join(compare.explain(compared))


def test_a_load_generator_start_up_inside_the_surge_clock_is_named_with_the_ratio_without_it() -> (
    None
):
    # 3,000 handshakes: wsfleet 1.0 s of start-up in 5.0 s (750/s after it), envoy+bare
    # 1.0 s in 4.0 s (1,000/s after it): 0.80x as measured, 0.75x without the start-up
    slow_start = [
        row("wsfleet raw", surge(600, 0.5, 0.5, 0.5), surge(300, 0.2, 0.5, 0.5), start_s=1.0),
        row("envoy+bare", surge(750, 0.5, 0.3, 0.3), surge(300, 0.2, 0.3, 0.3), start_s=1.0),
    ]
    compared = compare.side_by_side(slow_start, 800, {})
    assert compared["wsfleet raw"]["loadgen"]["ratio_to_baseline_after_start"] == pytest.approx(
        0.75
    )
    [ours] = [line for line in compare.explain(compared) if line.startswith("wsfleet raw")]
    assert "clock includes their start-up (1.00 s of 5.00 s; without it 0.75x)" in ours
    # a start-up that is a small share of the surge is not offered as a reason
    [quick] = compare.explain(compare.side_by_side(RESULTS, 800, {}))[:1]
    assert "start-up" not in quick


def test_a_core_saturated_by_other_processes_is_called_contended_and_named() -> None:
    crowded = {"clients": 0.6, "servers": 0.98}  # our servers used 30 % of a full core
    ours = {**surge(300, 0.2, 0.3, 0.5), "cores_busy_all_processes": crowded}
    base = {**surge(600, 0.2, 0.3, 0.3), "cores_busy_all_processes": crowded}
    results = [row("wsfleet raw", ours, ours), row("envoy+bare", base, base)]
    compared = compare.side_by_side(results, 800, {})
    assert compared["wsfleet raw"]["picows"]["bound"] == "contended"
    [line] = [line for line in compare.explain(compared) if line.startswith("wsfleet raw")]
    assert "clients 60%, servers 98%: other work on the machine took the rest" in line


def test_core_busy_is_the_busy_share_of_the_elapsed_core_time() -> None:
    assert core_busy((10.0, 40.0), (13.0, 44.0)) == pytest.approx(0.75)
    assert core_busy((10.0, 40.0), (10.0, 40.0)) is None  # no time passed


def test_the_server_cpu_is_split_by_process_per_handshake_and_per_echo_message() -> None:
    from benchmarks.load.generators import cpu_by_role

    before = {"envoy": (50.0, 10.0), "sidecar": (40.0, 20.0), "redis": (5.0, 1.0)}
    after = {"envoy": (60.0, 10.9), "sidecar": (45.0, 21.2), "redis": (5.0, 1.0)}
    per_handshake = cpu_by_role(after, before, 3000, 1000)
    assert per_handshake == {"sidecar": 0.4, "envoy": 0.3}  # most first; idle Redis left out
    assert cpu_by_role(after, before, 30_000, 1e6) == {"sidecar": 40.0, "envoy": 30.0}
    assert cpu_by_role(after, before, 0, 1000) == {}  # nothing done: nothing to divide
    results = [
        row("wsfleet raw", surge(900, 0.95, 0.6, 0.55), surge(1200, 0.3, 0.97, 0.80)),
        row("envoy+bare", surge(1000, 0.93, 0.4, 0.35), surge(2000, 0.45, 0.95, 0.48)),
    ]
    results[0]["outside"]["surge"]["server_cpu_ms_per_handshake_by_process"] = per_handshake
    text = compare.readable(compare.side_by_side(results, 800, {}))
    assert "wsfleet raw  ms/hs   sidecar 0.4, envoy 0.3" in text
    assert "envoy+bare   ms/hs   n/a" in text  # not measured: said, not invented
