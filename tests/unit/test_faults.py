"""The fault model of the chaos proxy: TCP-like loss (late, in order), latency, blackholes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfleet_tools.chaos.faults import MIN_RTO_S, FaultPlan, Faults


def test_a_clean_path_delivers_at_once() -> None:
    plan = FaultPlan(Faults())
    assert plan.deliver_at(1.0) == 1.0


def test_latency_and_jitter_delay_each_chunk() -> None:
    plan = FaultPlan(Faults(latency_s=0.1, jitter_s=0.05), random.Random(1))
    delays = [plan.deliver_at(t) - t for t in range(100)]  # type: ignore[operator]
    assert all(0.1 <= d <= 0.15 for d in delays)


def test_a_lost_chunk_arrives_a_retransmission_later_and_holds_back_the_rest() -> None:
    plan = FaultPlan(Faults(loss=0.5), random.Random(7))
    times = [plan.deliver_at(t * 0.01) for t in range(200)]
    late = [t for n, t in enumerate(times) if t is not None and t - n * 0.01 >= MIN_RTO_S]
    assert late, "some chunks needed a retransmission"
    assert times == sorted(times)  # type: ignore[type-var]


@given(
    st.floats(min_value=0.0, max_value=0.9), st.lists(st.floats(0, 100), min_size=1, max_size=50)
)
def test_delivery_never_reorders_or_precedes_arrival(loss: float, arrivals: list[float]) -> None:
    plan = FaultPlan(Faults(loss=loss, latency_s=0.01), random.Random(3))
    previous = 0.0
    for arrived in sorted(arrivals):
        at = plan.deliver_at(arrived)
        assert at is not None and at >= arrived and at >= previous
        previous = at


def test_a_blackhole_delivers_nothing() -> None:
    assert FaultPlan(Faults(blackhole=True)).deliver_at(0.0) is None


def test_impossible_faults_are_refused() -> None:
    with pytest.raises(ValueError):
        Faults(loss=1.0)
    with pytest.raises(ValueError):
        Faults(latency_s=-1)
