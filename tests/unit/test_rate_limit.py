"""Token buckets and a connection's inbound limits, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.rate_limit import InboundLimits, InboundVerdict, OnExceed, TokenBucket

# -- token buckets -------------------------------------------------------------


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0), (10, -5)])
def test_a_bucket_refuses_a_rate_or_burst_that_is_not_positive(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate, burst)


def test_a_new_bucket_is_full_and_grants_its_burst_at_once() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=5)
    assert [bucket.take(1, 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_a_bucket_refills_at_its_rate_from_the_time_elapsed() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=4)
    assert bucket.take(4, 0.0)
    assert not bucket.take(1, 0.25)  # half a token so far
    assert bucket.take(1, 0.5)
    assert bucket.tokens(1.5) == pytest.approx(2.0)


def test_an_idle_bucket_saves_no_more_than_its_burst() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=3)
    bucket.take(3, 0.0)
    assert bucket.tokens(3600.0) == 3
    assert not bucket.take(4, 3600.0)


def test_a_refused_take_takes_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=5)
    assert not bucket.take(6, 0.0)
    assert bucket.tokens(0.0) == 5


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=5)
    bucket.take(5, 10.0)
    assert not bucket.take(1, 5.0)
    assert not bucket.take(1, 10.5)  # still half a token since 10.0, not 5.5 tokens
    assert bucket.take(1, 11.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.floats(min_value=1, max_value=1000),
    requests=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=2),  # seconds since the previous request
            st.floats(min_value=0.1, max_value=50),  # tokens asked for
        ),
        min_size=1,
        max_size=200,
    ),
)
def test_a_bucket_never_grants_more_than_burst_plus_rate_times_any_window(
    rate: float, burst: float, requests: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket(rate, burst)
    granted: list[tuple[float, float]] = []
    now = 0.0
    for gap, amount in requests:
        now += gap
        if bucket.take(amount, now):
            granted.append((now, amount))
    for i, (start, _) in enumerate(granted):
        total = 0.0
        for at, amount in granted[i:]:
            total += amount
            assert total <= burst + rate * (at - start) + 1e-9 * (burst + total)


# -- inbound limits --------------------------------------------------------------------


def test_no_rate_set_means_every_message_passes() -> None:
    for limits in (InboundLimits(), InboundLimits(messages_per_s=0, bytes_per_s=0)):
        assert limits.unlimited
        assert all(limits.check(1 << 20, 0.0) is InboundVerdict.ALLOW for _ in range(10_000))


def test_past_the_message_rate_the_connection_is_closed_by_default() -> None:
    limits = InboundLimits(messages_per_s=10, message_burst=3)
    verdicts = [limits.check(10, 0.0) for _ in range(4)]
    assert verdicts == [InboundVerdict.ALLOW] * 3 + [InboundVerdict.CLOSE]


def test_past_the_message_rate_a_drop_policy_drops_the_message_and_keeps_the_connection() -> None:
    limits = InboundLimits(messages_per_s=10, message_burst=3, on_exceed="drop")
    verdicts = [limits.check(10, 0.0) for _ in range(5)]
    assert verdicts == [InboundVerdict.ALLOW] * 3 + [InboundVerdict.DROP] * 2
    assert limits.check(10, 0.1) is InboundVerdict.ALLOW  # a token refilled


def test_past_the_byte_rate_the_message_is_refused() -> None:
    limits = InboundLimits(bytes_per_s=1000, byte_burst=1500, on_exceed="drop")
    assert limits.check(1000, 0.0) is InboundVerdict.ALLOW
    assert limits.check(1000, 0.0) is InboundVerdict.DROP
    assert limits.check(500, 0.0) is InboundVerdict.ALLOW
    assert limits.check(500, 0.5) is InboundVerdict.ALLOW


def test_a_refused_message_costs_nothing_from_the_other_limit() -> None:
    limits = InboundLimits(
        messages_per_s=1, message_burst=2, bytes_per_s=100, byte_burst=100, on_exceed="drop"
    )
    assert limits.check(500, 0.0) is InboundVerdict.DROP  # too many bytes...
    assert limits.check(10, 0.0) is InboundVerdict.ALLOW  # ...yet no message token was spent
    assert limits.check(10, 0.0) is InboundVerdict.ALLOW
    assert limits.check(10, 0.0) is InboundVerdict.DROP


def test_an_unset_burst_is_one_second_of_the_rate() -> None:
    limits = InboundLimits(messages_per_s=5, on_exceed="drop")
    assert [limits.check(1, 0.0) for _ in range(6)].count(InboundVerdict.ALLOW) == 5


@pytest.mark.parametrize(
    "limits",
    [
        {"messages_per_s": -1},
        {"bytes_per_s": -1},
        {"messages_per_s": 1, "message_burst": -1},
        {"on_exceed": "ignore"},
    ],
)
def test_inbound_limits_refuse_negative_rates_and_unknown_policies(
    limits: dict[str, object],
) -> None:
    with pytest.raises(ValueError):
        InboundLimits(**limits)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=100),
    burst=st.integers(min_value=1, max_value=100),
    on_exceed=st.sampled_from(["close", "drop"]),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
)
def test_allowed_messages_never_exceed_burst_plus_rate_times_elapsed(
    rate: int, burst: int, on_exceed: OnExceed, gaps: list[float]
) -> None:
    limits = InboundLimits(messages_per_s=rate, message_burst=burst, on_exceed=on_exceed)
    refused = InboundVerdict.CLOSE if on_exceed == "close" else InboundVerdict.DROP
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        verdict = limits.check(1, now)
        assert verdict in (InboundVerdict.ALLOW, refused)
        allowed += verdict is InboundVerdict.ALLOW
        assert allowed <= burst + rate * now + 1e-9
