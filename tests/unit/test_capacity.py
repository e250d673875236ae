"""The capacity model: measured costs in, pods/Envoys/Redis out, and the CLI around it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from wsfleet_tools.capacity import (
    Measured,
    choose_batch_spacing,
    hpa_manifest,
    load_measured,
    plan,
    render,
)


def test_memory_bounds_connections_per_pod_with_headroom() -> None:
    measured = Measured(sidecar_kb_per_connection=20.0, sidecar_base_mb=0.0)
    result = plan(1_000_000, measured, message_rate=0.0, headroom=0.5, pod_memory_gib=1.0)
    assert result.connections_per_pod == int(1024 * 1024 / 20 * 0.5)  # 26,214
    assert result.pods == -(-1_000_000 // result.connections_per_pod)


def test_message_rate_can_be_the_bound() -> None:
    measured = Measured(sidecar_messages_per_s=5000.0)
    result = plan(1_000_000, measured, message_rate=1.0, headroom=0.0)
    assert result.connections_per_pod == 5000  # one core echoes 5000 msg/s


def test_more_connections_never_need_fewer_resources() -> None:
    small, large = plan(100_000, Measured()), plan(5_000_000, Measured())
    assert large.pods >= small.pods and large.envoy_instances >= small.envoy_instances
    assert large.redis_memory_gib >= small.redis_memory_gib


def test_round_trips_reach_every_shard_so_the_plan_spaces_batches_until_they_fit() -> None:
    measured = Measured(redis_round_trip_us=40.0, redis_ops_per_s_per_core=100_000.0)
    common = {"message_rate": 0.05, "headroom": 0.0, "connection_flush_s": 2.0}
    tight = plan(5_000_000, measured, redis_batch_spacing_s=0.002, **common)
    # at 2 ms every pod would send 500 replay batches/s and half a registry flush, all to
    # every shard: more than a whole core. The plan raises the spacing to the smallest
    # whole millisecond that keeps them within a quarter of it, and plans shards for that.
    assert tight.pods * 500.5 * 40e-6 > 1
    spacing = tight.redis_batch_spacing_s
    assert spacing == math.ceil(1000 / (0.25 / (tight.pods * 40e-6) - 0.5)) / 1000
    assert tight.redis_batch_spacing_asked_s == 0.002
    assert tight.redis_round_trips_per_shard_s == int(tight.pods * (1 / spacing + 0.5))
    assert tight.redis_round_trip_share == pytest.approx(
        tight.pods * (1 / spacing + 0.5) * 40e-6, abs=1e-3
    )
    assert tight.redis_round_trip_share <= 0.25
    assert tight.pods * (1 / (spacing - 0.001) + 0.5) * 40e-6 > 0.25  # the smallest that fits
    commands = tight.redis_ops_per_s / 100_000
    assert tight.redis_shards == math.ceil(commands / (1 - tight.redis_round_trip_share)) > 0
    wide = plan(5_000_000, measured, redis_batch_spacing_s=0.05, **common)
    assert wide.redis_batch_spacing_s == 0.05  # it fits as asked: kept
    assert 0 < wide.redis_round_trip_share < 0.25
    commands = wide.redis_ops_per_s / 100_000
    assert wide.redis_shards == math.ceil(commands / (1 - wide.redis_round_trip_share))
    at_quarter = plan(
        5_000_000, measured, redis_batch_spacing_s=wide.redis_batch_spacing_for_quarter_s, **common
    )
    assert at_quarter.redis_round_trip_share == pytest.approx(0.25, abs=0.01)
    # a small fleet is not spacing-bound: its one pod has fewer messages than batches
    small = plan(1_000, measured, redis_batch_spacing_s=0.002, **common)
    assert small.redis_batch_spacing_s == 0.002
    assert small.redis_round_trips_per_shard_s == int(1_000 * 0.05 + 0.5)
    assert small.pod_loss_reconnect_s is None  # one pod: no survivor to take its clients


def test_the_default_plan_for_5_million_chooses_a_spacing_that_fits_and_shards() -> None:
    result = plan(5_000_000, Measured())
    assert result.redis_batch_spacing_s > result.redis_batch_spacing_asked_s == 0.002
    assert 0 < result.redis_round_trip_share <= 0.25 and result.redis_shards >= 1
    assert "raised from 2 ms" in render(result, Measured())


def test_batch_spacing_is_kept_when_it_fits_and_else_the_next_whole_millisecond() -> None:
    # 100 pods, 10 us per round trip, 1 flush/s: 25 % of a core is 25,000 round trips/s,
    # 250 per pod, 249 of them replay batches: 4.016 ms -> 5 ms
    assert choose_batch_spacing(100, 100.0, 10e-6, 1.0, 0.002) == 0.002  # 100 batches/s fit
    assert choose_batch_spacing(100, 1000.0, 10e-6, 1.0, 0.002) == 0.005
    assert choose_batch_spacing(100, 1000.0, 10e-6, 1.0, 0.008) == 0.008  # asked for more
    assert choose_batch_spacing(100, 1000.0, 10e-6, 1.0, 0.0) == 0.005  # 0: no spacing asked


@pytest.mark.parametrize(
    ("round_trip_us", "reason"),
    [(5000.0, "pong flushes alone"), (1000.0, "batch spacing of")],
)
def test_a_fleet_no_spacing_fits_is_refused_with_the_reason(
    round_trip_us: float, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        plan(5_000_000, Measured(redis_round_trip_us=round_trip_us))


def test_a_pod_too_small_for_one_connection_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no connection"):
        plan(1_000, Measured(sidecar_base_mb=100.0), pod_memory_gib=0.05)


def test_every_input_says_where_and_when_it_was_measured() -> None:
    inputs = plan(5_000_000, Measured()).inputs
    assert set(inputs) == set(Measured().figures())
    handshakes = inputs["sidecar_handshakes_per_s"]
    assert handshakes["value"] == 1500.0 and "load --pin --rate 1500" in handshakes["where"]
    assert all(item["where"] and item["date"] and item["figure"] for item in inputs.values())


def test_results_files_override_the_recorded_figures(tmp_path: Path) -> None:
    results = tmp_path / "idle.json"
    results.write_text(
        json.dumps(
            {
                "benchmark": "idle_connections",
                "at": "2026-12-07T08:00:00Z",
                "results": {
                    "sidecar": {
                        "base_rss_mb": 50.0,
                        "steps": [
                            {"held": 5000, "kb_per_connection": 30.0, "handshakes_per_s": 700.0},
                            {"held": 10000, "kb_per_connection": 25.0, "handshakes_per_s": 500.0},
                        ],
                    }
                },
            }
        )
    )
    measured = load_measured([results])
    assert (measured.sidecar_kb_per_connection, measured.sidecar_handshakes_per_s) == (25.0, 500.0)
    source = plan(10, measured).inputs["sidecar_kb_per_connection"]
    assert (source["where"], source["date"]) == (str(results), "2026-12-07T08:00:00Z")
    assert "10,000 held" in source["figure"]


def test_the_hpa_targets_connections_per_pod() -> None:
    manifest = hpa_manifest(plan(5_000_000, Measured()))
    assert "kind: HorizontalPodAutoscaler" in manifest
    assert "wsfleet_gateway_connections" in manifest


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        plan(0, Measured())
    with pytest.raises(ValueError):
        plan(10, Measured(), headroom=1.0)


def test_the_load_benchmarks_measured_block_overrides_every_input_it_names(tmp_path: Path) -> None:
    results = tmp_path / "load.json"
    figures = {
        "envoy_kb_per_connection": 54.0,
        "redis_bytes_per_connection": 1100.0,
        "sidecar_handshakes_per_s": 3061.0,  # per sidecar CPU-second: not what a client gets
        "x": 1,
    }
    results.write_text(json.dumps({"benchmark": "load", "measured": figures}))
    measured = load_measured([results])
    assert (measured.envoy_kb_per_connection, measured.redis_bytes_per_connection) == (54.0, 1100.0)
    assert measured.sidecar_kb_per_connection == Measured().sidecar_kb_per_connection
    assert measured.sidecar_handshakes_per_s == Measured().sidecar_handshakes_per_s
    assert measured.sources["envoy_kb_per_connection"].where == str(results)
    assert measured.sources["sidecar_kb_per_connection"].where.startswith("docs/")


def _scale_result(path: Path, v1: bool) -> Path:
    def step(held: int, envoy: float) -> dict[str, object]:
        idle = {"envoy": envoy, "sidecar": 15.9, "redis": 1.25, "fleet": 73.0}
        return {"held": held, "kb_per_connection_idle": idle}

    steps = [step(10_000, 55.0), step(50_000, 55.4), step(25_000, 55.2)]
    document = {"benchmark": "scale", "at": "T", "options": {"envoys": 7, "v1": v1}}
    path.write_text(json.dumps({**document, "steps": steps}))
    return path


def test_the_scale_run_gives_memory_per_connection_from_its_largest_step(tmp_path: Path) -> None:
    v1 = load_measured([_scale_result(tmp_path / "v1.json", v1=True)])
    assert v1.envoy_kb_per_connection == 55.4
    assert (v1.sidecar_kb_per_connection, v1.redis_bytes_per_connection) == (15.9, 1280.0)
    assert "50,000 held, 7 Envoys" in v1.sources["sidecar_kb_per_connection"].figure
    # a raw run keeps no session state: only Envoy's figure is taken from it
    raw = load_measured([_scale_result(tmp_path / "raw.json", v1=False)])
    assert raw.envoy_kb_per_connection == 55.4
    assert raw.sidecar_kb_per_connection == Measured().sidecar_kb_per_connection
    assert raw.sources["sidecar_kb_per_connection"].where.startswith("docs/")


def test_a_file_that_is_no_benchmark_result_is_refused_by_name(tmp_path: Path) -> None:
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"benchmark": "chaos"}))
    with pytest.raises(ValueError, match=r"stray\.json"):
        load_measured([stray])
