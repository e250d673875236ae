"""The benchmarks of Envoy's memory, of the Envoys' chaos behind the L4 and of Autobahn, at
smoke size (see test_benchmarks_smoke.py: each must exit 0 and report every figure it is
meant to, as a number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_benchmarks_smoke import (
    assert_numbers,
    assert_ratio,
    dig,
    is_number,
    run_benchmark,
)

pytestmark = pytest.mark.integration


def test_envoy_share_measures_every_variant(tmp_path: Path) -> None:
    figures = run_benchmark("envoy-share", tmp_path)
    variants = figures["variants"]
    assert [v["variant"] for v in variants][:2] == ["envoy defaults", "wsfleet (xDS resources)"]
    assert len(variants) == 10
    defaults = variants[0]["rss_kb_per_connection"]
    for variant in variants:
        assert variant["connections"] == figures["connections"], variant
        assert_numbers(
            variant,
            "rss_kb_per_connection",
            "allocated_kb_per_connection",
            "heap_kb_per_connection",
        )
        assert_ratio(
            variant["vs_envoy_defaults"],
            variant["rss_kb_per_connection"],
            defaults,
            0.01,
            variant["variant"],
        )
    tcp = variants[-1]
    assert tcp["variant"].startswith("tcp_proxy")
    assert tcp["allocated_kb_per_connection"] < variants[0]["allocated_kb_per_connection"]


def test_envoy_memory_measures_idle_and_after_traffic_against_the_baseline(
    tmp_path: Path,
) -> None:
    figures = run_benchmark("envoy-memory", tmp_path)
    variants = figures["variants"]
    assert [v["variant"] for v in variants] == ["wsfleet (baseline)", "buffers 4 KiB"]
    baseline = variants[0]
    for variant in variants:
        held = figures["options"]["connections"]
        assert (variant["connections"], variant["errors"]) == (held, 0), variant
        sent = held * figures["options"]["messages"]
        assert variant["messages_sent"] == variant["messages_echoed"] == sent
        for phase in ("idle", "after_traffic"):
            assert_numbers(variant[phase], "rss_kb", "allocated_kb", "heap_size_kb")
            # every held WebSocket costs Envoy live objects (a few KB at least)
            assert variant[phase]["allocated_kb"] > 1, variant
            assert_ratio(
                variant[f"{phase}_rss_vs_baseline"],
                variant[phase]["rss_kb"],
                baseline[phase]["rss_kb"],
                0.01,
                variant["variant"],
            )


def test_envoy_chaos_rolls_and_kills_envoys_behind_the_l4(tmp_path: Path) -> None:
    figures = run_benchmark("envoy-chaos", tmp_path)
    assert figures["clients"] == 30
    assert figures["exact_streams"] == 30 and figures["messages_missing"] == 0
    drains = figures["rollout"]["drains"]
    assert [d["envoy"] for d in drains] == ["envoy", "envoy-2", "envoy-3"]
    for drain in drains:
        assert_numbers(drain, "attempts", "budget_average_per_bin", "peak_per_bin", "window_s")
        assert sum(drain["per_bin"]) == drain["attempts"]
    assert sum(d["attempts"] for d in drains) >= 30  # each client moved at least once
    assert_numbers(figures, "handshake_success", "rollout.seconds", "kill.back_within_s_max")
    kill = figures["kill"]
    assert kill["killed_envoy_held"] > 0 and kill["reconnected_clients"] > 0
    assert isinstance(kill["others_untouched"], bool)
    assert (tmp_path / "envoy-rollout.svg").exists()


def test_autobahn_reports_every_case_of_every_target_with_its_close(tmp_path: Path) -> None:
    figures = run_benchmark("autobahn", tmp_path)
    targets = dig(figures, "targets")
    assert sorted(targets) == ["bare", "conformance", "defaults"]
    for name, target in targets.items():
        groups = target["groups"]
        assert target["cases"] == sum(group["cases"] for group in groups.values()) >= 6, name
        assert is_number(target["passed"]) and 0 < target["passed"] <= target["cases"], name
        assert target["no_close_frame"] == 0, (name, groups)
    assert targets["conformance"]["passed"] == targets["conformance"]["cases"]
