"""The bounded send queue of one connection: shedding, coalescing, the slow-consumer verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.close_codes import CloseCode
from sidecar.core.send_queue import HARD_CAP_FACTOR, Outgoing, PushResult, SendQueue


def _msg(
    text: str = "m", *, droppable: bool = False, key: str | None = None, size: int | None = None
) -> Outgoing:
    data = text.encode() if size is None else text.encode().ljust(size, b".")
    return Outgoing(data, binary=False, droppable=droppable, coalesce_key=key)


def _drain(queue: SendQueue) -> list[bytes]:
    out: list[bytes] = []
    while (message := queue.pop()) is not None:
        out.append(message.data)
    return out


@pytest.mark.parametrize(
    ("messages", "size", "grace"), [(0, 100, 1.0), (10, 0, 1.0), (10, 100, -1.0)]
)
def test_a_queue_refuses_bounds_that_are_not_positive(
    messages: int, size: int, grace: float
) -> None:
    with pytest.raises(ValueError):
        SendQueue(messages, size, grace)


def test_messages_come_out_in_the_order_they_went_in() -> None:
    queue = SendQueue()
    for n in range(5):
        assert queue.push(_msg(f"m{n}"), 0.0) is PushResult.QUEUED
    assert len(queue) == 5 and queue.bytes_queued == 10
    assert _drain(queue) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert len(queue) == 0 and queue.bytes_queued == 0
    assert queue.pop() is None


def test_a_newer_message_with_the_same_key_replaces_the_queued_one() -> None:
    queue = SendQueue()
    queue.push(_msg("typing-1", key="typing:alice"), 0.0)
    queue.push(_msg("hello"), 0.0)
    assert queue.push(_msg("typing-22", key="typing:alice"), 0.0) is PushResult.COALESCED
    assert queue.coalesced == 1
    assert queue.bytes_queued == len("hello") + len("typing-22")
    assert _drain(queue) == [b"hello", b"typing-22"]  # the newest state, after what preceded it


def test_messages_with_different_keys_or_an_already_sent_key_are_not_coalesced() -> None:
    queue = SendQueue()
    queue.push(_msg("a", key="typing:alice"), 0.0)
    assert queue.push(_msg("b", key="typing:bob"), 0.0) is PushResult.QUEUED
    assert queue.pop() is not None  # alice's left the queue: a new one is simply queued
    assert queue.push(_msg("c", key="typing:alice"), 0.0) is PushResult.QUEUED
    assert _drain(queue) == [b"b", b"c"] and queue.coalesced == 0


def test_a_droppable_message_that_does_not_fit_is_dropped() -> None:
    queue = SendQueue(max_messages=2)
    queue.push(_msg("a"), 0.0)
    queue.push(_msg("b"), 0.0)
    assert queue.push(_msg("presence", droppable=True), 0.0) is PushResult.DROPPED
    assert queue.dropped == 1 and _drain(queue) == [b"a", b"b"]


def test_older_droppable_messages_give_way_to_a_new_message_oldest_first() -> None:
    queue = SendQueue(max_messages=3)
    queue.push(_msg("p1", droppable=True), 0.0)
    queue.push(_msg("a"), 0.0)
    queue.push(_msg("p2", droppable=True), 0.0)
    assert queue.push(_msg("b"), 0.0) is PushResult.SHED_OLDER
    assert queue.push(_msg("p3", droppable=True), 0.0) is PushResult.SHED_OLDER
    assert queue.dropped == 2
    assert _drain(queue) == [b"a", b"b", b"p3"]  # the freshest presence survives


def test_droppable_messages_give_way_when_the_byte_bound_is_reached() -> None:
    queue = SendQueue(max_bytes=100)
    queue.push(_msg("p1", droppable=True, size=40), 0.0)
    queue.push(_msg("p2", droppable=True, size=40), 0.0)
    assert queue.push(_msg("a", size=50), 0.0) is PushResult.SHED_OLDER
    assert queue.dropped == 1 and queue.bytes_queued == 90
    assert [data[:2] for data in _drain(queue)] == [b"p2", b"a."]


def test_a_non_droppable_message_is_never_lost_it_goes_over_the_bound() -> None:
    queue = SendQueue(max_messages=2, slow_consumer_grace_s=5.0)
    queue.push(_msg("a"), 0.0)
    queue.push(_msg("b"), 0.0)
    assert queue.push(_msg("c"), 0.0) is PushResult.OVER_LIMIT
    assert queue.over_limits and queue.dropped == 0
    assert _drain(queue) == [b"a", b"b", b"c"]


def test_a_coalescing_message_does_not_grow_a_full_queue() -> None:
    queue = SendQueue(max_messages=2)
    queue.push(_msg("a"), 0.0)
    queue.push(_msg("t1", key="typing:alice", droppable=True), 0.0)
    assert queue.push(_msg("t2", key="typing:alice", droppable=True), 0.0) is PushResult.COALESCED
    assert len(queue) == 2 and not queue.over_limits


def test_a_slow_consumer_is_cut_with_1013_after_the_grace_period_over_the_bound() -> None:
    queue = SendQueue(max_messages=2, slow_consumer_grace_s=5.0)
    for text in ("a", "b", "c"):
        queue.push(_msg(text), 10.0)
    assert queue.verdict(10.0) is None
    assert queue.verdict(14.999) is None
    assert queue.verdict(15.0) is CloseCode.TRY_AGAIN_LATER


def test_the_grace_clock_restarts_once_the_queue_drains_back_within_its_bound() -> None:
    queue = SendQueue(max_messages=2, slow_consumer_grace_s=5.0)
    for text in ("a", "b", "c"):
        queue.push(_msg(text), 0.0)
    queue.pop()  # back within the bound at ~4 s
    assert queue.verdict(4.0) is None and queue.verdict(100.0) is None
    queue.push(_msg("d"), 100.0)  # over again: a fresh grace period
    assert queue.verdict(104.0) is None
    assert queue.verdict(105.0) is CloseCode.TRY_AGAIN_LATER


def test_a_queue_within_its_bound_is_never_cut_however_long_it_waits() -> None:
    queue = SendQueue(max_messages=10, slow_consumer_grace_s=1.0)
    for n in range(10):
        queue.push(_msg(f"m{n}"), 0.0)
    assert queue.verdict(1e9) is None


def test_past_four_times_the_byte_bound_the_verdict_is_1013_at_once() -> None:
    queue = SendQueue(max_bytes=100, slow_consumer_grace_s=60.0)
    queue.push(_msg("a", size=HARD_CAP_FACTOR * 100), 0.0)
    assert queue.verdict(0.0) is None  # at the cap, within the grace period
    queue.push(_msg("b", size=1), 0.0)
    assert queue.verdict(0.0) is CloseCode.TRY_AGAIN_LATER


def test_past_four_times_the_message_bound_the_verdict_is_1013_at_once() -> None:
    queue = SendQueue(max_messages=5, slow_consumer_grace_s=60.0)
    for n in range(HARD_CAP_FACTOR * 5 + 1):
        queue.push(_msg(f"{n}"), 0.0)
    assert queue.verdict(0.0) is CloseCode.TRY_AGAIN_LATER


def _exceeds(items: list[Outgoing], extra: int, extra_bytes: int, bound: tuple[int, int]) -> bool:
    return len(items) + extra > bound[0] or sum(len(m.data) for m in items) + extra_bytes > bound[1]


def _reference_push(
    model: list[Outgoing], message: Outgoing, bound: tuple[int, int]
) -> tuple[PushResult, int]:
    """The queue's rules written the slow, obvious way: (result, messages shed)."""
    size = len(message.data)
    coalesced = message.coalesce_key is not None and any(
        m.coalesce_key == message.coalesce_key for m in model
    )
    if coalesced:
        model[:] = [m for m in model if m.coalesce_key != message.coalesce_key]
    shed = 0
    if _exceeds(model, 1, size, bound):
        if message.droppable and _exceeds([m for m in model if not m.droppable], 1, size, bound):
            return PushResult.DROPPED, 1
        while _exceeds(model, 1, size, bound) and any(m.droppable for m in model):
            model.remove(next(m for m in model if m.droppable))
            shed += 1
    model.append(message)
    if _exceeds(model, 0, 0, bound):
        return PushResult.OVER_LIMIT, shed
    if coalesced:
        return PushResult.COALESCED, shed
    return (PushResult.SHED_OLDER if shed else PushResult.QUEUED), shed


_operations = st.lists(
    st.tuples(
        st.sampled_from(["push", "push", "push", "pop"]),
        st.integers(min_value=0, max_value=300),  # size
        st.booleans(),  # droppable
        st.none() | st.sampled_from(["typing:alice", "typing:bob", "cursor:carol"]),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(operations=_operations)
def test_the_queue_follows_its_rules_and_droppables_never_hold_it_over_its_bound(
    operations: list[tuple[str, int, bool, str | None]],
) -> None:
    bound = (8, 1000)
    queue = SendQueue(*bound, slow_consumer_grace_s=5.0)
    model: list[Outgoing] = []  # what the queue should hold, in order
    shed = coalesced = 0
    for n, (operation, size, droppable, key) in enumerate(operations):
        if operation == "pop":
            assert queue.pop() == (model.pop(0) if model else None)
            continue
        message = _msg(f"{n}:", droppable=droppable, key=key, size=size)
        before = {m.coalesce_key for m in model}
        expected, lost = _reference_push(model, message, bound)
        assert queue.push(message, float(n)) is expected
        shed += lost
        coalesced += key is not None and key in before
        if droppable:
            assert expected is not PushResult.OVER_LIMIT  # only non-droppables go over
        if queue.over_limits:
            assert not any(m.droppable for m in model)  # droppables gave way first
        assert len(queue) == len(model)
        assert queue.bytes_queued == sum(len(m.data) for m in model)
    assert (queue.dropped, queue.coalesced) == (shed, coalesced)
    assert _drain(queue) == [m.data for m in model]
