"""The gateway's cycle-collector thresholds and its timed passes."""

import asyncio
import contextlib
import gc

from benchmarks.scale import collector_figures, pause_buckets
from sidecar.collector import COLLECTOR_THRESHOLDS, PassPacer, PauseTimer, tune_collector
from sidecar.metrics import GatewayMetrics


def test_each_pass_is_observed_with_its_generation_and_length() -> None:
    readings = iter([100.0, 100.025, 200.0, 200.004])  # a fake clock: start, stop, ...
    seen: list[tuple[int, float]] = []
    timer = PauseTimer(
        lambda generation, seconds: seen.append((generation, seconds)), readings.__next__
    )
    timer("start", {"generation": 1})
    timer("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    timer("start", {"generation": 0})
    timer("stop", {"generation": 0, "collected": 3, "uncollectable": 0})
    assert [(generation, round(seconds, 9)) for generation, seconds in seen] == [
        (1, 0.025),
        (0, 0.004),
    ]


def test_tuned_while_the_stack_is_open_then_as_before() -> None:
    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    metrics = GatewayMetrics()
    with contextlib.ExitStack() as stack:
        tune_collector(stack, metrics.observe_gc_pause)
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS
        gc.collect(1)
        gc.collect(2)
        counts = {
            sample.labels["generation"]: sample.value
            for family in metrics.gc_pause.collect()
            for sample in family.samples
            if sample.name.endswith("_count")
        }
        assert counts["1"] >= 1 and counts["2"] >= 1
    assert gc.get_threshold() == before
    assert gc.callbacks == callbacks


def test_generations_are_exported_before_any_pass() -> None:
    families = list(GatewayMetrics().gc_pause.collect())
    labels = {s.labels["generation"] for f in families for s in f.samples if "_count" in s.name}
    assert labels == {"0", "1", "2"}


PAGE = """# HELP wsfleet_gateway_gc_pause_seconds ...
# TYPE wsfleet_gateway_gc_pause_seconds histogram
wsfleet_gateway_gc_pause_seconds_bucket{generation="0",le="0.005"} 7.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="0",le="0.01"} 9.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="0",le="0.05"} 10.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="0",le="+Inf"} 10.0
wsfleet_gateway_gc_pause_seconds_count{generation="0"} 10.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="1",le="0.005"} 0.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="1",le="0.01"} 1.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="1",le="0.05"} 2.0
wsfleet_gateway_gc_pause_seconds_bucket{generation="1",le="+Inf"} 3.0
wsfleet_gateway_ping_rtt_seconds_bucket{le="0.01"} 99.0
"""


def test_the_scale_benchmark_counts_the_long_passes_between_two_readings() -> None:
    after = pause_buckets(PAGE)
    assert after == {0.005: 7.0, 0.01: 10.0, 0.05: 12.0, float("inf"): 13.0}
    before = {0.005: 5.0, 0.01: 6.0, 0.05: 6.0, float("inf"): 6.0}
    # 7 passes since: 3 over 10 ms (13 - 10 against 6 - 6), 1 over 50 ms
    assert collector_figures([after], [before]) == {
        "passes": 7,
        "over_10_ms": 3,
        "over_50_ms": 1,
    }
    assert collector_figures([after, after], [before, after])["passes"] == 7


async def test_paced_passes_walk_the_young_and_middle_generations_each_interval() -> None:
    passes: list[int] = []
    three_middle_passes = asyncio.Event()

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])
            if passes.count(1) >= 3:
                three_middle_passes.set()

    enabled = gc.isenabled()
    gc.disable()  # no automatic pass: every pass seen is the pacer's
    gc.callbacks.append(seen)
    pacer = asyncio.create_task(PassPacer(0.001).run())
    try:
        async with asyncio.timeout(10):
            await three_middle_passes.wait()
    finally:
        pacer.cancel()
        gc.callbacks.remove(seen)
        if enabled:
            gc.enable()
    # middle passes (young and middle generations), never a full one
    assert 2 not in passes


def test_a_paced_pass_is_due_an_interval_after_the_last_middle_or_full_pass() -> None:
    now = [100.0]
    pacer = PassPacer(1.0, lambda: now[0])
    assert pacer.due_in() == 1.0
    now[0] = 100.6
    pacer("start", {"generation": 1})
    pacer("stop", {"generation": 1, "collected": 0, "uncollectable": 0})  # a threshold's
    now[0] = 101.2
    assert round(pacer.due_in(), 9) == 0.4  # not at 101.0: one ran at 100.6
    pacer("stop", {"generation": 0, "collected": 0, "uncollectable": 0})  # young: no
    now[0] = 101.6
    assert pacer.due_in() == 0.0
    pacer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert pacer.due_in() == 1.0
