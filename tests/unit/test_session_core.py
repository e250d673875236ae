"""One session's rules with no I/O: limits, v1 parsing, duplicates, persist-then-send,
notices and close decisions, driven with a fake clock."""

from __future__ import annotations

import json

from sidecar.core import envelope
from sidecar.core.close_codes import CloseCode
from sidecar.core.rate_limit import InboundLimits
from sidecar.core.resume import Sequencer
from sidecar.core.session import (
    BAD_FRAME_BURST,
    QueueBounds,
    SessionCore,
    SessionCounters,
)

BOUNDS = QueueBounds(messages=100, bytes=1_000_000, slow_consumer_grace_s=5.0)


def _v1(limits: InboundLimits | None = None, **kwargs: int) -> SessionCore:
    return SessionCore("s1", Sequencer(**kwargs), SessionCounters(), BOUNDS, lambda: limits)


def _raw(limits: InboundLimits | None = None) -> SessionCore:
    return SessionCore("s1", None, SessionCounters(), BOUNDS, lambda: limits)


def _frames(core: SessionCore) -> list[bytes]:
    out: list[bytes] = []
    while (frame := core.next_frame()) is not None:
        out.append(frame.data)
    return out


def _client(cseq: int, text: str) -> bytes:
    return json.dumps({"type": "message", "cseq": cseq, "data": text}).encode()


def test_a_raw_session_forwards_frames_as_they_are_and_sends_replies_unnumbered() -> None:
    core = _raw()
    forwarded = core.client_frame(b"\x00\x01", True, 0.0)
    assert forwarded == envelope.ClientMessage(0, b"\x00\x01", True)
    assert core.backend_message(b"hi", False, False, "", 7, 0.0) is None  # nothing to persist
    frame = core.next_frame()
    assert frame is not None and (frame.data, frame.binary, frame.seq) == (b"hi", False, 0)
    assert core.next_frame() is None


def test_a_v1_reply_goes_out_only_once_persisted_and_in_order() -> None:
    core = _v1()
    first = core.backend_message(b"a", False, False, "", 11, 0.0)
    second = core.backend_message(b"b", False, False, "", 12, 0.0)
    assert first is not None and second is not None
    assert (first.session_id, first.seq, first.data, first.message_id) == ("s1", 1, b"a", 11)
    assert second.seq == 2
    assert core.next_frame() is None  # persist, then send
    assert core.persisted(1, 11, True) == 11  # the backend may forget message 11
    assert [json.loads(f)["seq"] for f in _frames(core)] == [1]
    assert core.persisted(2, 12, True) == 12
    assert [json.loads(f) for f in _frames(core)] == [{"type": "message", "seq": 2, "data": "b"}]


def test_an_unreachable_replay_store_lets_delivery_go_on_without_acknowledging() -> None:
    core = _v1()
    core.backend_message(b"a", False, False, "", 5, 0.0)
    assert core.persisted(1, 5, None) == 0  # not durable: the backend keeps it
    assert len(_frames(core)) == 1
    assert core.backend_last_id == 0


def test_a_session_that_moved_to_another_pod_closes_1013_and_sends_nothing_more() -> None:
    core = _v1()
    core.backend_message(b"a", False, False, "", 0, 0.0)
    core.persisted(1, 0, False)
    assert core.closing == (CloseCode.TRY_AGAIN_LATER, "session moved")
    assert core.next_frame() is None
    assert core.backend_message(b"b", False, False, "", 0, 0.0) is None


def test_a_resumed_session_numbers_on_from_where_it_was() -> None:
    core = _v1(next_seq=41, last_cseq=9)
    entry = core.backend_message(b"x", False, False, "", 0, 0.0)
    assert entry is not None and entry.seq == 41
    assert core.client_frame(_client(9, "again"), False, 0.0) is None  # seen before
    assert core._counters.duplicates == 1
    forwarded = core.client_frame(_client(10, "new"), False, 0.0)
    assert forwarded == envelope.ClientMessage(10, b"new", False)


def test_client_pings_are_answered_with_pongs_that_coalesce() -> None:
    core = _v1()
    for _ in range(5):
        assert core.client_frame(b'{"type":"ping"}', False, 0.0) is None
    assert _frames(core) == [envelope.pong().encode()]
    assert core._counters.coalesced == 4


def test_bad_frames_get_notices_within_a_budget_then_close_1007() -> None:
    core = _v1()
    now = 0.0
    for _ in range(int(BAD_FRAME_BURST)):
        assert core.client_frame(b"not json", False, now) is None
    assert core.closing is None
    notices = [json.loads(f) for f in _frames(core)]
    assert notices and all(n["reason"].startswith("bad_frame") for n in notices)
    assert core.client_frame(b"not json", False, now) is None
    assert core.closing == (CloseCode.INVALID_PAYLOAD, "too many bad frames")
    assert core._counters.bad_frame_closes == 1


def test_the_bad_frame_budget_refills_with_time() -> None:
    core = _v1()
    for _ in range(int(BAD_FRAME_BURST)):
        core.client_frame(b"[", False, 0.0)
    assert core.client_frame(b"[", False, 1.5) is None  # one more a second
    assert core.closing is None


def test_every_frame_counts_against_the_rate_limit_pings_included() -> None:
    core = _v1(InboundLimits(messages_per_s=1, message_burst=3, on_exceed="close"))
    for _ in range(3):
        core.client_frame(b'{"type":"ping"}', False, 0.0)
    assert core.closing is None
    core.client_frame(b'{"type":"ping"}', False, 0.0)
    assert core.closing == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
    assert core._counters.rate_limited_closes == 1
    assert core.client_frame(_client(1, "late"), False, 10.0) is None  # closing: nothing more


def test_a_dropping_limit_answers_with_one_coalesced_notice() -> None:
    core = _raw(InboundLimits(messages_per_s=1, message_burst=1, on_exceed="drop"))
    assert core.client_frame(b"a", False, 0.0) is not None
    assert core.client_frame(b"b", False, 0.0) is None
    assert core.client_frame(b"c", False, 0.0) is None
    assert [json.loads(f) for f in _frames(core)] == [{"type": "notice", "reason": "rate_limited"}]
    assert core._counters.rate_limited_drops == 2
    assert core.client_frame(b"d", False, 1.0) is not None  # refilled


def test_a_client_that_does_not_read_is_cut_once_over_its_bounds_for_the_grace() -> None:
    core = SessionCore("s", None, SessionCounters(), QueueBounds(2, 1_000, 5.0))
    for n in range(3):
        core.backend_message(b"m%d" % n, False, False, "", 0, 0.0)
    assert core.closing is None  # over, but within the grace
    core.backend_message(b"late", False, False, "", 0, 5.0)
    assert core.closing == (CloseCode.TRY_AGAIN_LATER, "slow consumer")


def test_a_write_stalled_for_the_grace_closes_1013() -> None:
    core = _raw()
    core.send_stalled()
    assert core.closing == (CloseCode.TRY_AGAIN_LATER, "slow consumer")


def test_the_counters_see_every_frame_and_byte_each_way() -> None:
    core = _raw()
    core.client_frame(b"12345", False, 0.0)
    core.backend_message(b"abc", False, False, "", 0, 0.0)
    _frames(core)
    c = core._counters
    assert (c.messages_in, c.bytes_in, c.messages_out, c.bytes_out) == (1, 5, 1, 3)
    assert core.queued() == (0, 0)


def test_droppable_messages_are_shed_for_a_full_queue_and_counted() -> None:
    core = SessionCore("s", None, SessionCounters(), QueueBounds(2, 1_000, 5.0))
    core.backend_message(b"presence", False, True, "", 0, 0.0)
    core.backend_message(b"m1", False, False, "", 0, 0.0)
    core.backend_message(b"m2", False, False, "", 0, 0.0)
    assert _frames(core) == [b"m1", b"m2"]
    assert core._counters.shed == 1


def test_a_refresh_frame_is_handed_to_the_transport_to_verify() -> None:
    core = _v1()
    refresh = core.client_frame(b'{"type":"refresh","token":"a.b.c"}', False, 0.0)
    assert refresh == envelope.ClientMessage(envelope.REFRESH_CSEQ, b"a.b.c", False)
    assert core.client_frame(b'{"type":"refresh","token":7}', False, 0.0) is None
    [notice] = [json.loads(f) for f in _frames(core)]
    assert notice["reason"].startswith("bad_frame")


def test_a_client_frame_after_the_token_expired_is_not_forwarded_but_closes_4401() -> None:
    for core in (_v1(), _raw()):
        core.token_expires_at = 100.0  # Unix seconds; the checks take a fake wall clock
        assert core.token_expired(99.9) is False
        assert core.client_frame(_client(1, "in time"), False, 0.0) is not None
        assert core.token_expired(100.0) is True
        assert core.closing == (CloseCode.TOKEN_EXPIRED, "token expired")
        assert core.client_frame(_client(2, "too late"), False, 0.0) is None


def test_a_close_decided_before_the_token_expired_stands() -> None:
    core = _v1()
    core.token_expires_at = 100.0
    core.send_stalled()
    assert core.token_expired(200.0) is True
    assert core.closing == (CloseCode.TRY_AGAIN_LATER, "slow consumer")
