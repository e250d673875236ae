"""The demo backend bounds what one client can make it send."""

from __future__ import annotations

from wsfleet.api import bridge_pb2 as pb
from wsfleet.outbox import Outbox
from wsfleet_tools.demo_backend import (
    ANY_USER,
    BROADCASTS_PER_S,
    MAX_BROADCAST_BYTES,
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    DemoBackend,
    replies,
)


def _sizes(command: str) -> tuple[int, int]:
    answers = replies("b", command)
    return len(answers), max(len(a.data) for a in answers)


def test_a_flood_is_capped_in_message_size_and_in_total() -> None:
    count, size = _sizes("/flood 1000000 10000000")
    assert size == MAX_MESSAGE_BYTES
    assert count * size <= MAX_COMMAND_BYTES
    assert _sizes("/flood 3 10") == (3, 10)  # what is within the caps is sent as asked


def test_padded_presence_is_capped_the_same_way() -> None:
    count, size = _sizes("/presence 1000000 2000000")
    assert count * size <= MAX_COMMAND_BYTES


def test_a_negative_count_is_a_bad_command_not_a_crash() -> None:
    [answer] = replies("b", "/flood -1 10")
    assert isinstance(answer.data, str) and answer.data.startswith("bad command")


def _opened(session_id: str) -> pb.GatewayEvent:
    info = pb.SessionInfo(session_id=session_id, user_id=session_id)
    return pb.GatewayEvent(opened=pb.SessionOpened(session=info))


def _message(session_id: str, text: str) -> pb.GatewayEvent:
    return pb.GatewayEvent(message=pb.ClientMessage(session_id=session_id, data=text.encode()))


def _texts(events: list[pb.BackendEvent]) -> list[str]:
    return [e.message.data.decode() for e in events if e.HasField("message")]


async def test_broadcasts_are_capped_per_second_and_in_size_and_the_sender_is_told() -> None:
    backend = DemoBackend(broadcasters=("alice",))
    sender: Outbox[pb.BackendEvent] = Outbox(10_000, 10_000, 1 << 30)
    other: Outbox[pb.BackendEvent] = Outbox(10_000, 10_000, 1 << 30)
    await backend._handle(_opened("alice"), sender)
    await backend._handle(_opened("bob"), other)
    for n in range(BROADCASTS_PER_S + 3):
        await backend._handle(_message("alice", f"/broadcast hello {n}"), sender)
    await backend._handle(
        _message("alice", "/broadcast " + "x" * (MAX_BROADCAST_BYTES + 1)), sender
    )
    assert _texts(await other.take()) == [f"hello {n}" for n in range(BROADCASTS_PER_S)]
    refusals = [text for text in _texts(await sender.take()) if text.startswith("refused")]
    assert len(refusals) == 4  # the three over the rate and the one over the size


async def _two_sessions(
    backend: DemoBackend,
) -> tuple[Outbox[pb.BackendEvent], Outbox[pb.BackendEvent]]:
    alice: Outbox[pb.BackendEvent] = Outbox(10_000, 10_000, 1 << 30)
    bob: Outbox[pb.BackendEvent] = Outbox(10_000, 10_000, 1 << 30)
    await backend._handle(_opened("alice"), alice)
    await backend._handle(_opened("bob"), bob)
    return alice, bob


async def test_only_a_broadcaster_reaches_everyone_and_others_are_told() -> None:
    backend = DemoBackend(broadcasters=("alice",))
    alice, bob = await _two_sessions(backend)
    await backend._handle(_message("bob", "/broadcast from bob"), bob)
    await backend._handle(_message("alice", "/broadcast from alice"), alice)
    assert _texts(await alice.take()) == ["from alice"]
    [refusal, got] = _texts(await bob.take())
    assert refusal.startswith("refused:") and "--broadcaster" in refusal
    assert got == "from alice"


async def test_by_default_nobody_may_broadcast_and_a_star_lets_everyone() -> None:
    nobody = DemoBackend()
    alice, bob = await _two_sessions(nobody)
    await nobody._handle(_message("alice", "/broadcast hello"), alice)
    assert [text.startswith("refused:") for text in _texts(await alice.take())] == [True]
    assert len(bob) == 0  # handling is synchronous: a broadcast would be queued by now
    anyone = DemoBackend(broadcasters=(ANY_USER,))
    alice, bob = await _two_sessions(anyone)
    await anyone._handle(_message("bob", "/broadcast hello"), bob)
    assert _texts(await alice.take()) == ["hello"]
