"""The pace of a drain, driven by a fake clock: flat, done within the budget, then forced."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.drain import DrainPlan, DrainProgress


def _run(plan: DrainPlan, tick_s: float) -> list[float]:
    """Drive a plan like the event-loop glue: every ``tick_s``, close what is due and report
    it; at the budget's end force-close the rest. Returns the time of every close."""
    closes: list[float] = []
    tick = 0
    while (wakeup := plan.next_wakeup()) is not None:
        # Skip the ticks before the next close falls due: nothing is due at them.
        tick = max(tick, math.floor((wakeup - plan.started_at) / tick_s) - 1)
        now = plan.started_at + tick * tick_s
        n = plan.left if plan.force_due(now) else plan.due(now)
        closes.extend([now] * n)
        plan.closed(n)
        tick += 1
    return closes


@pytest.mark.parametrize(
    "arguments",
    [
        {"total": -1, "budget_s": 10},
        {"total": 1, "budget_s": -1},
        {"total": 1, "budget_s": 10, "min_spacing_s": -1},
        {"total": 1, "budget_s": 10, "tail_margin": 1.0},
    ],
)
def test_a_plan_refuses_negative_counts_and_times(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="drain"):
        DrainPlan(started_at=0.0, **arguments)  # type: ignore[arg-type]


def test_closes_are_spread_evenly_over_the_budget_less_its_tail() -> None:
    plan = DrainPlan(total=90, budget_s=100.0, started_at=1000.0)
    assert plan.spacing_s == pytest.approx(1.0)  # 90 closes over the first 90 s
    assert plan.due(1000.0) == 0
    assert plan.due(1000.999) == 0
    assert plan.due(1001.0) == 1
    assert plan.due(1045.0) == 45
    assert plan.due(1090.0) == 90
    assert not plan.force_due(1099.9)


def test_due_is_the_target_less_what_was_reported_closed() -> None:
    plan = DrainPlan(total=10, budget_s=10.0, started_at=0.0, tail_margin=0.0)
    assert plan.due(3.0) == 3
    assert plan.due(3.0) == 3  # nothing reported yet: still due
    plan.closed(2)
    assert plan.due(3.0) == 1
    plan.closed(5)  # clients left by themselves: the plan is ahead
    assert plan.due(5.0) == 0
    assert plan.due(8.0) == 1


def test_reports_beyond_the_total_are_capped_and_negative_ones_refused() -> None:
    plan = DrainPlan(total=3, budget_s=10.0, started_at=0.0)
    plan.closed(5)
    assert plan.left == 0 and plan.due(100.0) == 0 and not plan.force_due(100.0)
    with pytest.raises(ValueError):
        plan.closed(-1)


def test_at_the_end_of_the_budget_the_rest_is_force_closed() -> None:
    plan = DrainPlan(total=100, budget_s=10.0, started_at=0.0)
    plan.closed(40)  # the caller fell behind
    assert not plan.force_due(9.999)
    assert plan.force_due(10.0) and plan.force_due(11.0)
    assert plan.due(10.0) == 60


def test_min_spacing_caps_the_close_rate_and_the_budget_still_wins() -> None:
    plan = DrainPlan(total=100, budget_s=10.0, started_at=0.0, min_spacing_s=0.5)
    assert plan.spacing_s == 0.5
    assert plan.due(5.0) == 10  # 2 a second, not 11
    assert plan.due(9.99) == 19
    assert plan.force_due(10.0) and plan.due(10.0) == 100


def test_an_empty_or_zero_budget_plan_is_simple() -> None:
    empty = DrainPlan(total=0, budget_s=30.0, started_at=0.0)
    assert empty.due(0.0) == 0 and not empty.force_due(100.0) and empty.next_wakeup() is None
    assert empty.progress(0.0) == DrainProgress(total=0, closed=0, left=0, eta_s=0.0)
    at_once = DrainPlan(total=5, budget_s=0.0, started_at=7.0)
    assert at_once.due(6.0) == 0
    assert at_once.due(7.0) == 5 and at_once.force_due(7.0)


def test_progress_reports_closed_left_and_the_time_until_the_plan_is_done() -> None:
    plan = DrainPlan(total=90, budget_s=100.0, started_at=0.0)
    assert plan.progress(0.0) == DrainProgress(total=90, closed=0, left=90, eta_s=90.0)
    plan.closed(plan.due(30.0))
    assert plan.progress(30.0) == DrainProgress(total=90, closed=30, left=60, eta_s=60.0)
    plan.closed(60)
    assert plan.progress(50.0).eta_s == 0.0


def test_next_wakeup_is_when_the_next_close_falls_due() -> None:
    plan = DrainPlan(total=4, budget_s=10.0, started_at=100.0, tail_margin=0.2)
    wakeups = []
    while (at := plan.next_wakeup()) is not None:
        assert plan.due(at) == 1
        wakeups.append(at)
        plan.closed(1)
    assert wakeups == pytest.approx([102.0, 104.0, 106.0, 108.0])


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=20_000),
    budget_s=st.floats(min_value=1.0, max_value=600.0),
    started_at=st.floats(min_value=0.0, max_value=1e6),
    tick_s=st.floats(min_value=0.001, max_value=0.1),
)
def test_closes_are_flat_per_second_and_all_done_before_the_tail_of_the_budget(
    total: int, budget_s: float, started_at: float, tick_s: float
) -> None:
    plan = DrainPlan(total, budget_s, started_at)
    closes = _run(plan, tick_s)
    assert len(closes) == total
    assert all(at <= started_at + 0.9 * budget_s + tick_s for at in closes)  # none forced
    per_second = Counter(math.floor(at - started_at) for at in closes)
    mean = total / budget_s
    # Twice the mean rate at most; closes are whole, so below ~1 a second a second may hold 2.
    assert max(per_second.values(), default=0) <= max(2 * mean, 2)


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=5_000),
    budget_s=st.floats(min_value=0.0, max_value=120.0),
    min_spacing_s=st.floats(min_value=0.0, max_value=1.0),
    tick_s=st.floats(min_value=0.001, max_value=0.5),
)
def test_every_connection_is_closed_by_the_end_of_the_budget(
    total: int, budget_s: float, min_spacing_s: float, tick_s: float
) -> None:
    plan = DrainPlan(total, budget_s, 0.0, min_spacing_s)
    closes = _run(plan, tick_s)
    assert len(closes) == total
    assert max(closes) <= budget_s + tick_s
    assert plan.left == 0 and plan.next_wakeup() is None
