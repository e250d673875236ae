"""WebSocket pings and pongs count against a connection's rate limit, in the same bucket as
its data frames; past it they are not answered, and with ``close`` the session closes
with 1008 as for a data flood. (Fake clock, no sockets.)"""

from __future__ import annotations

from sidecar.core.close_codes import CloseCode
from sidecar.core.rate_limit import InboundLimits, OnExceed
from sidecar.core.session import QueueBounds, SessionCore, SessionCounters

BOUNDS = QueueBounds(messages=100, bytes=1_000_000, slow_consumer_grace_s=5.0)


def _core(
    messages_per_s: float = 10.0, bytes_per_s: float | None = None, on_exceed: OnExceed = "close"
) -> tuple[SessionCore, SessionCounters]:
    counters = SessionCounters()
    limits = InboundLimits(
        messages_per_s=messages_per_s, bytes_per_s=bytes_per_s, on_exceed=on_exceed
    )
    return SessionCore("s1", None, counters, BOUNDS, lambda: limits), counters


def test_a_ping_flood_is_cut_with_1008_once_the_bucket_is_empty() -> None:
    core, counters = _core(messages_per_s=10.0)
    answered = [core.control_frame(0, 0.0) for _ in range(10)]
    assert answered == [True] * 10  # the burst: one second's worth
    assert core.closing is None
    assert core.control_frame(0, 0.0) is False
    assert core.closing == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
    assert counters.rate_limited_closes == 1
    assert core.control_frame(0, 5.0) is False  # closing: nothing more is answered


def test_pings_and_data_frames_share_one_bucket() -> None:
    core, _ = _core(messages_per_s=10.0)
    for _ in range(5):
        assert core.control_frame(0, 0.0)
    for _ in range(5):
        assert core.client_frame(b"x", False, 0.0) is not None
    assert core.client_frame(b"x", False, 0.0) is None  # the pings used half the burst
    assert core.closing == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")


def test_data_frames_leave_fewer_tokens_for_pings() -> None:
    core, _ = _core(messages_per_s=4.0)
    for _ in range(4):
        assert core.client_frame(b"x", False, 0.0) is not None
    assert core.control_frame(0, 0.0) is False
    assert core.closing is not None and core.closing[0] == CloseCode.POLICY_VIOLATION


def test_pings_within_the_rate_go_on_answered_for_ever() -> None:
    core, _ = _core(messages_per_s=10.0)
    for second in range(100):
        for i in range(10):
            assert core.control_frame(4, second + i / 10)
    assert core.closing is None


def test_a_ping_payload_counts_against_the_byte_rate() -> None:
    core, _ = _core(messages_per_s=1000.0, bytes_per_s=250.0)
    assert core.control_frame(125, 0.0)  # the largest control payload RFC 6455 allows
    assert core.control_frame(125, 0.0)
    assert core.control_frame(125, 0.0) is False
    assert core.closing is not None and core.closing[0] == CloseCode.POLICY_VIOLATION


def test_with_drop_an_over_the_limit_ping_goes_unanswered_and_the_session_stays() -> None:
    core, counters = _core(messages_per_s=2.0, on_exceed="drop")
    assert core.control_frame(0, 0.0) and core.control_frame(0, 0.0)
    assert core.control_frame(0, 0.0) is False
    assert core.closing is None
    assert counters.rate_limited_drops == 1
    assert core.control_frame(0, 1.0)  # the bucket refilled


def test_without_limits_every_control_frame_is_answered() -> None:
    core = SessionCore("s1", None, SessionCounters(), BOUNDS, lambda: None)
    assert all(core.control_frame(125, 0.0) for _ in range(10_000))
    assert core.closing is None
