"""Heartbeats for many connections, driven by a fake clock: pings, RTTs, dead sockets."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.heartbeat import HeartbeatPolicy, HeartbeatSchedule

DEFAULT = HeartbeatPolicy()

PongDelay = Callable[[str, float], float | None]  # (connection, ping time) -> delay, None: silent


def _schedule(
    interval: float = 10.0, timeout: float = 20.0, jitter: float = 0.2, seed: int = 7
) -> HeartbeatSchedule:
    return HeartbeatSchedule(HeartbeatPolicy(interval, timeout, jitter), random.Random(seed))


def _silent(conn: str, sent: float) -> float | None:
    return None


@dataclass
class Run:
    """What happened while a schedule was driven: pings sent, pongs' RTTs, deaths."""

    pings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rtts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    last_frame: dict[str, float] = field(default_factory=dict)
    deaths: dict[str, float] = field(default_factory=dict)


def _drive(
    schedule: HeartbeatSchedule,
    until: float,
    pong_delay: PongDelay = _silent,
    step: float | None = None,
) -> Run:
    """Run the clock to ``until`` the way the asyncio glue does: wake up at
    ``next_wakeup()`` (or every ``step`` seconds), deliver pongs, then ask who is dead
    and who is due a ping. A client answers a ping after ``pong_delay(conn, sent)``."""
    run = Run()
    in_flight: list[tuple[float, str]] = []
    now = 0.0
    while now <= until:
        while in_flight and in_flight[0][0] <= now:
            at, conn = heapq.heappop(in_flight)
            rtt = schedule.pong(conn, at)
            run.last_frame[conn] = at
            if rtt is not None:
                run.rtts[conn].append(rtt)
        for conn in schedule.dead(now):
            assert conn not in run.deaths, "a connection was reported dead twice"
            run.deaths[conn] = now
        for conn in schedule.due(now):
            run.pings[conn].append(now)
            delay = pong_delay(conn, now)
            if delay is not None:
                heapq.heappush(in_flight, (now + delay, conn))
        if step is not None:
            now += step
            continue
        wakeup = schedule.next_wakeup()
        assert wakeup is None or wakeup > now, "next_wakeup named a time already handled"
        wakeups = [t for t in (wakeup, in_flight[0][0] if in_flight else None) if t is not None]
        if not wakeups:
            break
        now = min(wakeups)
    return run


# -- the policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "timeout", "jitter"),
    [(0, 20, 0.2), (-1, 20, 0.2), (10, 0, 0.2), (10, 20, -0.1), (10, 20, 1.0)],
)
def test_a_policy_refuses_a_nonpositive_period_or_a_jitter_outside_0_to_1(
    interval: float, timeout: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        HeartbeatPolicy(interval, timeout, jitter)


def test_the_default_policy_detects_a_dead_socket_within_30_seconds() -> None:
    assert (DEFAULT.interval_s, DEFAULT.timeout_s, DEFAULT.jitter) == (15.0, 15.0, 0.2)
    assert DEFAULT.detection_bound_s == 30.0


# -- ping times ------------------------------------------------------------------


def test_the_first_ping_is_due_within_one_jittered_interval_of_opening() -> None:
    schedule = _schedule()
    for n in range(1000):
        schedule.add(f"c{n}", 100.0)
    first = {conn: times[0] for conn, times in _drive(schedule, until=111).pings.items()}
    assert len(first) == 1000
    assert all(108.0 <= at < 110.0 for at in first.values())  # 10 s less up to 20 %


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_jitter_spreads_10k_first_pings_over_at_least_15_percent_of_the_interval(
    seed: int,
) -> None:
    schedule = _schedule(seed=seed)
    for n in range(10_000):
        schedule.add(f"c{n}", 0.0)
    interval = schedule.policy.interval_s
    first = [times[0] for times in _drive(schedule, until=interval).pings.values()]
    assert len(first) == 10_000
    assert max(first) - min(first) >= 0.15 * interval
    per_millisecond = Counter(int(at * 1000) for at in first)
    assert max(per_millisecond.values()) <= 50  # ~5 expected: not all in the same millisecond


def test_each_connection_is_pinged_once_per_jittered_interval() -> None:
    schedule = _schedule()
    for n in range(200):
        schedule.add(f"c{n}", 0.0)
    run = _drive(schedule, until=300, pong_delay=lambda conn, sent: 0.05)
    for times in run.pings.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(8.0 <= gap < 10.0 for gap in gaps)
        assert 30 <= len(times) <= 38  # 300 s at 8-10 s apart


def test_a_late_tick_pings_once_and_does_not_catch_up_on_missed_pings() -> None:
    schedule = _schedule()
    schedule.add("c", 0.0)
    assert schedule.due(55.0) == ["c"]  # the loop was stalled for several intervals
    assert schedule.due(55.0) == []
    next_ping = schedule.next_wakeup()
    assert next_ping is not None and 63.0 <= next_ping < 65.0


def test_jitter_zero_pings_exactly_every_interval() -> None:
    schedule = _schedule(interval=5.0, jitter=0.0)
    schedule.add("c", 1.0)
    run = _drive(schedule, until=30, pong_delay=lambda conn, sent: 0.01)
    assert run.pings["c"] == [6.0, 11.0, 16.0, 21.0, 26.0]


# -- pongs and liveness ----------------------------------------------------------------


def test_a_pong_returns_the_round_trip_time_of_the_outstanding_ping() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    assert schedule.due(10.0) == ["c"]
    assert schedule.pong("c", 10.25) == pytest.approx(0.25)
    assert schedule.pong("c", 10.5) is None  # that ping was already answered


def test_a_pong_with_no_ping_outstanding_has_no_round_trip_time() -> None:
    schedule = _schedule()
    schedule.add("c", 0.0)
    assert schedule.pong("c", 1.0) is None
    assert schedule.pong("unknown", 1.0) is None


def test_a_stalled_path_shows_as_a_long_round_trip_not_hidden_by_later_pings() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    schedule.due(10.0)
    schedule.due(20.0)  # still unanswered: a second ping goes out
    assert schedule.pong("c", 25.0) == pytest.approx(15.0)  # measured from the first ping
    assert schedule.dead(100.0) == []


def test_a_silent_connection_is_dead_within_interval_plus_timeout() -> None:
    schedule = _schedule()
    schedule.add("silent", 0.0)
    schedule.add("answering", 0.0)
    run = _drive(
        schedule, until=300, pong_delay=lambda conn, sent: 0.02 if conn != "silent" else None
    )
    assert set(run.deaths) == {"silent"}
    assert DEFAULT.timeout_s <= run.deaths["silent"] <= DEFAULT.detection_bound_s


def test_a_connection_is_dead_exactly_timeout_after_its_first_unanswered_ping() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    assert schedule.due(10.0) == ["c"]
    assert schedule.dead(29.999) == []
    assert schedule.due(20.0) == ["c"]  # a second ping does not push the deadline back
    assert schedule.dead(30.0) == ["c"]


def test_any_frame_from_the_client_counts_as_liveness_without_a_pong() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("chatty", 0.0)
    now = 0.0
    while now < 300:
        schedule.due(now)
        assert schedule.dead(now) == []
        schedule.activity("chatty", now)  # a message every 5 s, never a pong
        now += 5.0
    assert "chatty" in schedule


def test_a_connection_that_keeps_sending_is_not_pinged_and_is_named_heard_instead() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("chatty", 0.0)
    schedule.add("quiet", 0.0)
    pinged: list[tuple[float, str]] = []
    heard: list[tuple[float, str]] = []
    now = 0.0
    while now <= 100.0:
        if now % 4 == 0:
            schedule.activity("chatty", now)  # a message every 4 s, answered
        due = schedule.due(now, written_to=lambda conn: conn == "chatty")
        pinged += [(now, conn) for conn in due]
        heard += [(now, conn) for conn in schedule.take_heard()]
        if "quiet" in due:
            schedule.pong("quiet", now + 0.5)  # answers its pings
        assert schedule.dead(now) == []
        now += 1.0
    assert all(conn == "quiet" for _, conn in pinged)
    assert [at for at, _ in pinged] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert [conn for _, conn in heard] == ["chatty"] * len(heard) and len(heard) >= 9
    assert schedule.take_heard() == []  # each named once


def test_a_pong_does_not_stand_in_for_the_next_ping() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    assert schedule.due(10.0, written_to=lambda conn: True) == ["c"]
    schedule.pong("c", 10.1)
    # the pong answered a ping: the next one is still due
    assert schedule.due(20.0, written_to=lambda conn: True) == ["c"]
    assert schedule.take_heard() == []


def test_a_sender_the_gateway_does_not_write_to_is_still_pinged() -> None:
    """Busy one way only (a client uploading, nothing back): the ping is what tells its
    client the server is there."""
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    asked: list[str] = []

    def written_to(conn: str) -> bool:
        asked.append(conn)
        return len(asked) == 2  # written to only in the second interval

    schedule.activity("c", 5.0)
    assert schedule.due(10.0, written_to) == ["c"]  # heard, not written to: pinged
    schedule.activity("c", 15.0)
    assert schedule.due(20.0, written_to) == []  # heard and written to: spared
    assert schedule.take_heard() == ["c"]
    assert schedule.due(24.999, written_to) == [] and asked == ["c", "c"]
    assert schedule.due(25.0, written_to) == ["c"]  # one interval after the frame heard


@settings(max_examples=40, deadline=None)
@given(
    interval=st.floats(min_value=0.5, max_value=30),
    timeout=st.floats(min_value=0.5, max_value=60),
    jitter=st.floats(min_value=0, max_value=0.9),
    gaps=st.lists(st.floats(min_value=0.01, max_value=0.99), min_size=1, max_size=30),
    step_ratio=st.floats(min_value=0.01, max_value=0.5),
    seed=st.integers(min_value=0),
)
def test_a_sender_that_falls_silent_is_dead_within_interval_plus_timeout_of_its_last_frame(
    interval: float,
    timeout: float,
    jitter: float,
    gaps: list[float],
    step_ratio: float,
    seed: int,
) -> None:
    """Messages at random gaps (each shorter than the shortest interval plus the timeout:
    never silent long enough to be cut; pongs never), then silence: it
    is never cut while it sends, and is cut between timeout and interval + timeout after
    its last frame, pinged or not in between."""
    schedule = _schedule(interval, timeout, jitter, seed)
    schedule.add("c", 0.0)
    longest_gap = (1 - jitter) * interval + timeout
    sends = list(itertools.accumulate(gap * longest_gap for gap in gaps))
    step = step_ratio * interval
    now, last_frame, died, end = 0.0, 0.0, None, sends[-1] + 2 * (interval + timeout)
    while died is None and now <= end:
        while sends and sends[0] <= now:
            last_frame = sends.pop(0)
            schedule.activity("c", last_frame)
        schedule.due(now, written_to=lambda conn: True)
        schedule.take_heard()
        if schedule.dead(now):
            died = now
        now += step
    assert died is not None
    assert not sends, "cut while it was still sending"
    # the caller's tick may delay the ping and then the verdict: one tick each
    assert last_frame + timeout <= died <= last_frame + interval + timeout + 2 * step + 1e-9


def test_a_frame_stamped_before_the_ping_does_not_answer_it() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    schedule.due(10.0)
    schedule.activity("c", 9.5)  # read before the ping went out, reported late
    assert schedule.dead(30.0) == ["c"]


def test_a_dead_connection_is_reported_once_and_forgotten() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    schedule.due(10.0)
    assert schedule.dead(30.0) == ["c"]
    assert "c" not in schedule and len(schedule) == 0
    assert schedule.dead(1000.0) == [] and schedule.due(1000.0) == []
    assert schedule.pong("c", 1000.0) is None
    assert schedule.next_wakeup() is None


def test_a_removed_connection_is_never_pinged_nor_reported_dead() -> None:
    schedule = _schedule()
    schedule.add("gone", 0.0)
    schedule.add("kept", 0.0)
    schedule.due(10.0)
    schedule.remove("gone")
    schedule.remove("never-added")
    run = _drive(schedule, until=100)
    assert "gone" not in run.pings and set(run.deaths) == {"kept"}


def test_adding_an_id_again_starts_it_afresh() -> None:
    schedule = _schedule(jitter=0.0)
    schedule.add("c", 0.0)
    schedule.due(10.0)  # unanswered: dead at 30 under its old life
    schedule.add("c", 25.0)  # the same id reconnected
    assert schedule.dead(30.0) == []
    assert schedule.due(35.0) == ["c"]
    assert schedule.dead(55.0) == ["c"]


@settings(max_examples=60, deadline=None)
@given(
    interval=st.floats(min_value=0.5, max_value=30),
    timeout_ratio=st.floats(min_value=0.1, max_value=4),
    jitter=st.floats(min_value=0, max_value=0.9),
    delays=st.lists(st.floats(min_value=0, max_value=0.999), min_size=1, max_size=20),
    step_ratio=st.none() | st.floats(min_value=0.01, max_value=0.5),
    seed=st.integers(min_value=0),
)
def test_a_connection_that_answers_every_ping_in_time_is_never_reported_dead(
    interval: float,
    timeout_ratio: float,
    jitter: float,
    delays: list[float],
    step_ratio: float | None,
    seed: int,
) -> None:
    timeout = timeout_ratio * interval
    schedule = _schedule(interval, timeout, jitter, seed)
    schedule.add("c", 0.0)
    answers = itertools.cycle(delays)  # each ping answered within the timeout

    def pong_delay(conn: str, sent: float) -> float:
        return next(answers) * timeout

    step = None if step_ratio is None else step_ratio * interval  # the caller's tick
    run = _drive(schedule, until=5 * (interval + timeout), pong_delay=pong_delay, step=step)
    assert run.deaths == {}
    assert len(run.pings["c"]) >= 3  # the property was exercised


@settings(max_examples=60, deadline=None)
@given(
    interval=st.floats(min_value=0.5, max_value=30),
    timeout=st.floats(min_value=0.5, max_value=60),
    jitter=st.floats(min_value=0, max_value=0.9),
    dies_at=st.floats(min_value=0, max_value=200),
    seed=st.integers(min_value=0),
)
def test_a_socket_that_goes_silent_is_dead_between_timeout_and_interval_plus_timeout(
    interval: float, timeout: float, jitter: float, dies_at: float, seed: int
) -> None:
    schedule = _schedule(interval, timeout, jitter, seed)
    schedule.add("c", 0.0)

    def pong_delay(conn: str, sent: float) -> float | None:
        return 0.001 if sent + 0.001 <= dies_at else None

    run = _drive(schedule, until=dies_at + 2 * (interval + timeout), pong_delay=pong_delay)
    last_frame = run.last_frame.get("c", 0.0)  # opening the connection counts as a frame
    died = run.deaths["c"]
    assert last_frame + timeout <= died <= last_frame + interval + timeout + 1e-9


# -- the caller's wake-ups ---------------------------------------------------------------


def test_next_wakeup_is_the_earliest_ping_or_deadline_and_none_when_idle() -> None:
    schedule = _schedule(jitter=0.0)
    assert schedule.next_wakeup() is None
    schedule.add("a", 0.0)
    schedule.add("b", 3.0)
    assert schedule.next_wakeup() == 10.0
    schedule.due(10.0)
    assert schedule.next_wakeup() == 13.0  # b's ping comes before a's deadline (30)
    schedule.remove("b")
    assert schedule.next_wakeup() == 20.0  # a's next ping; b's timer is skipped
    schedule.remove("a")
    assert schedule.next_wakeup() is None


def test_heavy_churn_of_short_connections_does_not_grow_the_timers() -> None:
    schedule = _schedule()
    for n in range(10):
        schedule.add(f"long{n}", 0.0)
    for n in range(50_000):  # connections that open and close within an interval
        schedule.add(f"short{n}", n * 1e-4)
        schedule.remove(f"short{n}")
    assert len(schedule) == 10
    assert len(schedule._pings) <= 2048  # compacted, not one stale timer per closed one


def test_100k_connections_run_through_interval_plus_timeout_of_ticks() -> None:
    schedule = _schedule()
    conns = [f"c{n}" for n in range(100_000)]
    for conn in conns:
        schedule.add(conn, 0.0)
    silent = set(conns[::2])
    pinged: set[str] = set()
    for tick in range(int(DEFAULT.detection_bound_s * 10) + 2):  # ticks of 100 ms
        now = tick / 10
        for conn in schedule.dead(now):
            assert conn in silent
        for conn in schedule.due(now):
            pinged.add(conn)
            if conn not in silent:
                schedule.pong(conn, now + 0.005)
        now += 0.1
    assert len(pinged) == 100_000
    assert len(schedule) == 50_000  # every silent one found dead and forgotten
