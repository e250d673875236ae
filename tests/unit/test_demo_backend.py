"""The demo backend bounds what one client can make it send."""

from __future__ import annotations

from wsfleet.api import bridge_pb2 as pb
from wsfleet_tools.demo_backend import (
    BROADCASTS_PER_S,
    MAX_BATCH_BYTES,
    MAX_BROADCAST_BYTES,
    MAX_COMMAND_BYTES,
    EchoBackend,
    _outbox,
    replies,
)


def _sizes(command: str) -> tuple[int, int]:
    events = replies("b", "s1", command.encode(), False)
    return len(events), max(len(e.message.data) for e in events)


def test_a_flood_is_capped_in_message_size_and_in_total() -> None:
    count, size = _sizes("/flood 1000000 10000000")
    assert size == MAX_BATCH_BYTES
    assert count * size <= MAX_COMMAND_BYTES
    assert _sizes("/flood 3 10") == (3, 10)  # what is within the caps is sent as asked


def test_padded_presence_is_capped_the_same_way() -> None:
    count, size = _sizes("/presence 1000000 2000000")
    assert count * size <= MAX_COMMAND_BYTES


def test_a_negative_count_is_a_bad_command_not_a_crash() -> None:
    [event] = replies("b", "s1", b"/flood -1 10", False)
    assert event.message.data.startswith(b"bad command")


async def test_broadcasts_are_capped_per_second_and_in_size_and_the_sender_is_told() -> None:
    backend = EchoBackend()
    sender, other = _outbox(), _outbox()
    for session_id, out in (("alice", sender), ("bob", other)):
        session = pb.SessionInfo(session_id=session_id, user_id=session_id)
        backend._opened(pb.SessionOpened(session=session), out, "pod-1")
    for n in range(BROADCASTS_PER_S + 3):
        backend._broadcast("alice", f"hello {n}".encode())
    backend._broadcast("alice", b"x" * (MAX_BROADCAST_BYTES + 1))
    to_bob = [e.message.data for e in await other.take()]
    assert to_bob == [f"hello {n}".encode() for n in range(BROADCASTS_PER_S)]
    refusals = [e.message.data for e in await sender.take() if b"refused" in e.message.data]
    assert len(refusals) == 4
