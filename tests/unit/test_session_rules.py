"""The per-connection rules, driven with a fake clock: heartbeats, send queue, limits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.session import (
    CloseCode,
    HeartbeatPolicy,
    HeartbeatSchedule,
    InboundVerdict,
    Outgoing,
    PushResult,
    SendQueue,
    TokenBucket,
    parse_retry_hint,
    retry_hint_reason,
)
from sidecar.session.rate_limit import InboundLimits, LimitSpec

# -- heartbeats -------------------------------------------------------------


def _schedule(interval: float = 10, timeout: float = 20, jitter: float = 0.2) -> HeartbeatSchedule:
    return HeartbeatSchedule(HeartbeatPolicy(interval, timeout, jitter), random.Random(7))


def _run(
    schedule: HeartbeatSchedule, until: float, step: float = 0.5, answer: set[str] = frozenset()
) -> dict[str, float]:  # type: ignore[assignment]
    """Advance the clock; connections in ``answer`` pong at once. Returns death times."""
    deaths: dict[str, float] = {}
    now = 0.0
    while now <= until:
        tick = schedule.tick(now)
        for conn in tick.ping:
            if conn in answer:
                schedule.pong(conn, now + 0.001)
        for conn in tick.dead:
            deaths[conn] = now
        now += step
    return deaths


def test_a_silent_connection_is_dead_within_interval_plus_timeout() -> None:
    schedule = _schedule()
    schedule.add("silent", 0.0)
    schedule.add("alive", 0.0)
    deaths = _run(schedule, until=120, answer={"alive"})
    assert set(deaths) == {"silent"}
    assert deaths["silent"] <= HeartbeatPolicy().detection_bound_s == 30


def test_a_socket_that_dies_after_answering_is_still_found_in_time() -> None:
    schedule = _schedule()
    schedule.add("c", 0.0)
    died_at = 25.0
    now, found = 0.0, None
    while now < 100 and found is None:
        tick = schedule.tick(now)
        if now < died_at:
            for conn in tick.ping:
                schedule.pong(conn, now)
        if tick.dead:
            found = now
        now += 0.25
    assert found is not None and found - died_at <= 30


def test_any_frame_counts_as_liveness() -> None:
    schedule = _schedule(interval=1, timeout=2)
    schedule.add("chatty", 0.0)
    now = 0.0
    while now < 30:
        assert schedule.tick(now).dead == []
        schedule.activity("chatty", now)  # never pongs, but keeps talking
        now += 0.5


def test_pong_returns_the_round_trip_time_of_the_pending_ping() -> None:
    schedule = _schedule(interval=1, timeout=5, jitter=0)
    schedule.add("c", 0.0)
    assert schedule.pong("c", 0.5) is None  # no ping yet
    assert schedule.tick(1.0).ping == ["c"]
    assert schedule.pong("c", 1.025) == pytest.approx(0.025)
    assert schedule.pong("c", 1.03) is None


def test_first_pings_of_connections_opened_together_are_spread_by_jitter() -> None:
    schedule = _schedule(interval=10, jitter=0.2)
    for n in range(10_000):
        schedule.add(f"c{n}", 0.0)
    first_pings = []
    now = 0.0
    while now <= 10.0:
        first_pings += [now] * len(schedule.tick(now).ping)
        now += 0.01
    assert len(first_pings) == 10_000
    assert min(first_pings) >= 8.0 - 0.01 and max(first_pings) <= 10.0
    busiest = max(first_pings.count(t) for t in set(first_pings))
    assert busiest < 100  # no millisecond bunching: spread over 2 s in 10 ms steps


def test_removed_connections_are_never_reported() -> None:
    schedule = _schedule(interval=1, timeout=1)
    schedule.add("gone", 0.0)
    schedule.remove("gone")
    assert _run(schedule, until=10) == {}
    assert len(schedule) == 0


def test_next_wakeup_says_when_to_tick() -> None:
    schedule = _schedule(interval=10, jitter=0)
    assert schedule.next_wakeup() is None
    schedule.add("c", 5.0)
    assert schedule.next_wakeup() == 15.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=9.0), min_size=1, max_size=40))
def test_a_connection_that_answers_every_ping_is_never_dead(delays: list[float]) -> None:
    schedule = _schedule(interval=10, timeout=20)
    schedule.add("c", 0.0)
    now, pending = 0.0, iter(delays)
    answer_at: float | None = None
    while now < 300:
        tick = schedule.tick(now)
        assert tick.dead == []
        if tick.ping:
            answer_at = now + next(pending, 1.0)
        if answer_at is not None and now >= answer_at:
            schedule.pong("c", now)
            answer_at = None
        now += 0.5


def test_a_hundred_thousand_connections_tick_through_an_interval() -> None:
    schedule = _schedule(interval=10, timeout=20)
    for n in range(100_000):
        schedule.add(f"c{n}", 0.0)
    pinged = 0
    now = 0.0
    while now <= 10.0:
        pinged += len(schedule.tick(now).ping)
        now += 0.1
    assert pinged == 100_000


def test_heartbeat_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        HeartbeatPolicy(interval_s=0)
    with pytest.raises(ValueError):
        HeartbeatPolicy(jitter=1.0)


# -- send queue -------------------------------------------------------------


def _msg(size: int = 10, droppable: bool = False, key: str | None = None) -> Outgoing:
    return Outgoing(b"x" * size, droppable=droppable, coalesce_key=key)


def test_messages_come_out_in_order() -> None:
    queue = SendQueue(max_messages=10)
    for n in range(5):
        queue.push(Outgoing(str(n).encode()), 0.0)
    assert [queue.pop().data for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]  # type: ignore[union-attr]
    assert queue.pop() is None


def test_a_full_queue_sheds_new_droppable_messages() -> None:
    queue = SendQueue(max_messages=3)
    for _ in range(3):
        assert queue.push(_msg(), 0.0) is PushResult.QUEUED
    assert queue.push(_msg(droppable=True), 0.0) is PushResult.DROPPED
    assert (len(queue), queue.dropped) == (3, 1)


def test_a_full_queue_sheds_older_droppable_messages_for_important_ones() -> None:
    queue = SendQueue(max_messages=3)
    queue.push(_msg(droppable=True), 0.0)
    queue.push(_msg(), 0.0)
    queue.push(_msg(), 0.0)
    assert queue.push(_msg(), 0.0) is PushResult.SHED_OLDER
    assert len(queue) == 3
    assert all(not item.droppable for item in (queue.pop(), queue.pop(), queue.pop()))  # type: ignore[union-attr]


def test_coalescing_keeps_only_the_newest_of_a_key() -> None:
    queue = SendQueue()
    queue.push(Outgoing(b"typing:1", coalesce_key="typing:alice"), 0.0)
    queue.push(Outgoing(b"hello"), 0.0)
    assert (
        queue.push(Outgoing(b"typing:2", coalesce_key="typing:alice"), 0.0) is PushResult.COALESCED
    )
    assert [queue.pop().data, queue.pop().data] == [b"hello", b"typing:2"]  # type: ignore[union-attr]


def test_a_consumer_over_the_bound_for_the_grace_period_gets_1013() -> None:
    queue = SendQueue(max_messages=2, slow_consumer_grace_s=5.0)
    queue.push(_msg(), 0.0)
    queue.push(_msg(), 0.0)
    assert queue.push(_msg(), 1.0) is PushResult.OVER_LIMIT
    assert queue.verdict(5.9) is None
    assert queue.verdict(6.0) is CloseCode.TRY_AGAIN_LATER


def test_catching_up_resets_the_slow_consumer_clock() -> None:
    queue = SendQueue(max_messages=2, slow_consumer_grace_s=5.0)
    for _ in range(3):
        queue.push(_msg(), 0.0)
    queue.pop(4.0)
    assert queue.verdict(100.0) is None


def test_past_the_hard_cap_the_verdict_is_immediate() -> None:
    queue = SendQueue(max_messages=10_000, max_bytes=100, slow_consumer_grace_s=60)
    for _ in range(41):
        queue.push(_msg(10), 0.0)
    assert queue.bytes_queued == 410
    assert queue.verdict(0.0) is CloseCode.TRY_AGAIN_LATER


@given(st.lists(st.tuples(st.integers(1, 500), st.booleans()), max_size=300))
def test_droppable_traffic_alone_never_exceeds_the_bounds(pushes: list[tuple[int, bool]]) -> None:
    queue = SendQueue(max_messages=20, max_bytes=2000)
    for size, _ in pushes:
        queue.push(_msg(size, droppable=True), 0.0)
        assert len(queue) <= 20 and queue.bytes_queued <= 2000


# -- rate limits and close codes ---------------------------------------------


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5)
    assert [bucket.take(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(1, 0.1) is True
    assert bucket.take(1, 0.1) is False


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_a_token_bucket_never_allows_more_than_burst_plus_rate_times_time(
    gaps: list[float],
) -> None:
    bucket = TokenBucket(rate_per_s=20, burst=10)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += bucket.take(1, now)
    assert allowed <= 10 + 20 * now + 1e-9


def test_inbound_limits_close_or_drop_as_configured() -> None:
    closing = InboundLimits(LimitSpec(messages_per_s=2, message_burst=2))
    assert [closing.check(10, 0.0) for _ in range(3)] == [
        InboundVerdict.ALLOW,
        InboundVerdict.ALLOW,
        InboundVerdict.CLOSE,
    ]
    dropping = InboundLimits(LimitSpec(bytes_per_s=100, byte_burst=100, close_on_exceed=False))
    assert dropping.check(80, 0.0) is InboundVerdict.ALLOW
    assert dropping.check(80, 0.0) is InboundVerdict.DROP
    assert InboundLimits(LimitSpec()).check(10**9, 0.0) is InboundVerdict.ALLOW


def test_a_retry_hint_fits_a_close_frame_and_reads_back() -> None:
    reason = retry_hint_reason("drain " * 50, 1500)
    assert len(reason.encode()) <= 123
    assert parse_retry_hint(reason) == 1500
    assert parse_retry_hint("bye") is None
    assert int(CloseCode.SERVICE_RESTART) == 1012
