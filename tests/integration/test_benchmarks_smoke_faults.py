"""The benchmarks that kill or degrade the fleet, at smoke size (see test_benchmarks_smoke.py:
each must exit 0 and report every figure it is meant to, as a number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_benchmarks_smoke import (
    CAN_PIN,
    assert_numbers,
    assert_per_cpu,
    assert_ratio,
    is_number,
    run_benchmark,
)

pytestmark = pytest.mark.integration


def test_channels_reports_fanout_latency_failover_and_presence(tmp_path: Path) -> None:
    extra = ("--pin",) if CAN_PIN else ()
    figures = run_benchmark("channels", tmp_path, *extra)
    options = figures["options"]
    assert set(figures["fanout"]) == {"busy", "isolated"}
    for pattern, fanout in figures["fanout"].items():
        for name in ("wsfleet", "bare"):
            row = fanout[name]
            assert row["connections"]["opened"] == options["fanout_connections"], row
            assert row["delivered"] == row["expected"] > 0, (pattern, name)
            assert_numbers(row, "deliveries_per_s", "server_cpu_s", "publish_to_last_arrival_s.p99")
            assert_per_cpu(row["deliveries_per_cpu_s"], row["server_cpu_s"], f"{name} per CPU-s")
        assert is_number(fanout["wsfleet"]["deliveries_per_cpu_s"])  # the fleet's CPU is measurable
        assert_ratio(
            fanout["ratio_per_cpu_s"],
            fanout["wsfleet"]["deliveries_per_cpu_s"],
            fanout["bare"]["deliveries_per_cpu_s"],
            1e-9,
            f"wsfleet / bare deliveries per CPU-s, {pattern}",
        )

    for name in ("wsfleet", "bare"):
        latency = figures["latency"][name]
        subscribers = latency["connections"]["opened"]
        assert subscribers == options["latency_subscribers"], latency["connections"]
        assert latency["subscribers_with_every_publication"] == subscribers
        assert latency["to_last_subscriber_s"]["n"] == options["latency_publications"]
        assert_numbers(
            latency,
            "to_last_subscriber_s.p50",
            "to_last_subscriber_s.p99",
            "to_last_subscriber_s.max",
        )

    failover = figures["failover"]
    assert failover["subscribers"] == options["failover_subscribers"]
    assert failover["publications"] > 0 and failover["publish_errors"] == 0
    assert failover["on_killed_gateway"] > 0
    assert failover["exact"] == failover["subscribers"], failover
    for fault in ("duplicates", "gaps", "out_of_order", "extras"):
        assert failover[fault] == 0, (fault, failover)
    assert_numbers(failover, "kill_to_every_moved_resubscribed_s", "kill_to_resubscribed_s.p50")

    presence = figures["presence"]
    assert presence["matched"] is True, presence
    assert_numbers(presence, "matched_after_kill_s", "ttl_s", "max_clients_seen")
    ghosts = presence["ghosts"]
    # every subscriber was present before the kill: the match measures the expiry
    assert presence["clients_before_kill"] == failover["subscribers"] + ghosts["opened"]
    lost = ghosts["on_killed_gateway"]
    assert presence["live_subscribers"] == presence["clients_before_kill"] - lost
    assert figures["pinned"] is CAN_PIN
    if CAN_PIN:
        assert figures["cores"] == {"clients": [0], "servers": [1]}
        assert set(map(tuple, figures["server_affinity"].values())) == {(1,)}


def test_chaos_kills_pods_under_sdk_clients(tmp_path: Path) -> None:
    figures = run_benchmark("chaos", tmp_path)
    assert figures["clients"] == 40
    assert_numbers(
        figures,
        "exact_streams",
        "reconnected_clients",
        "first_kill.attempts",
        "first_kill.peak_to_mean",
        "second_kill.attempts",
        "second_kill.peak_to_mean",
        "handshake_success",
        "handshake_attempts",
    )
    assert figures["reconnected_clients"] > 0
    assert isinstance(figures["only_killed_pods_clients_reconnected"], bool)
    assert figures["envoy_counters"], "no Envoy counters"
    assert (tmp_path / "chaos-reconnects.png").exists()


def test_heartbeat_sweep_reports_every_cell(tmp_path: Path) -> None:
    figures = run_benchmark("heartbeat-sweep", tmp_path)
    cells = figures["cells"]
    assert [(c["loss"], c["latency_s"]) for c in cells] == [(0.0, 0.0), (0.05, 0.0)]
    for cell in cells:
        assert_numbers(cell, "false_positives", "detection_s", "bound_s", "hold_s")
        assert cell["clients"] == 10
