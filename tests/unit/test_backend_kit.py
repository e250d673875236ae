"""The backend kit: handlers hear each gateway event in order, sessions outlive gateway
streams, durable messages are kept until persisted and sent again on a resume, client
publications are judged, and what a backend does becomes bridge events."""

from __future__ import annotations

import pytest

from wsfleet.api import bridge_pb2 as pb
from wsfleet.backend import ACCEPT, Backend, Decision, NoGateway, Session, reject
from wsfleet.outbox import Outbox


def _outbox() -> Outbox[pb.BackendEvent]:
    return Outbox(10_000, 10_000, 1 << 30)


def _opened(session_id: str, resumed: bool = False, last_id: int = 0) -> pb.GatewayEvent:
    info = pb.SessionInfo(session_id=session_id, user_id="u-" + session_id, transport="websocket")
    opened = pb.SessionOpened(session=info, resumed=resumed, last_message_id=last_id)
    return pb.GatewayEvent(opened=opened)


def _message(session_id: str, data: bytes, binary: bool = False) -> pb.GatewayEvent:
    message = pb.ClientMessage(session_id=session_id, data=data, binary=binary)
    return pb.GatewayEvent(message=message)


def _closed(session_id: str) -> pb.GatewayEvent:
    return pb.GatewayEvent(closed=pb.SessionClosed(session_id=session_id, code=1000))


def _persisted(session_id: str, message_id: int) -> pb.GatewayEvent:
    return pb.GatewayEvent(persisted=pb.Persisted(session_id=session_id, message_id=message_id))


class Recorder(Backend):
    def __init__(self, decision: Decision = ACCEPT) -> None:
        super().__init__()
        self.heard: list[tuple[str, object]] = []
        self.decision = decision

    def on_open(self, session: Session) -> None:
        self.heard.append(("open", (session.id, session.user_id, session.resumed)))

    async def on_message(self, session: Session, data: str | bytes) -> None:
        self.heard.append(("message", data))
        session.send(data)

    def on_close(self, session: Session, code: int, reason: str) -> None:
        self.heard.append(("close", code))

    def on_publication(self, session: Session, channel: str, data: str | bytes) -> Decision:
        self.heard.append(("publication", (channel, data)))
        return self.decision


async def test_handlers_hear_events_in_order_and_replies_go_to_the_sessions_gateway() -> None:
    backend, out = Recorder(), _outbox()
    for event in (
        _opened("s1"),
        _message("s1", b"hi"),
        _message("s1", b"\x00", True),
        _closed("s1"),
    ):
        await backend._handle(event, out)
    assert backend.heard == [
        ("open", ("s1", "u-s1", False)),
        ("message", "hi"),
        ("message", b"\x00"),
        ("close", 1000),
    ]
    sent = [e.message for e in await out.take()]
    assert [(m.data, m.binary) for m in sent] == [(b"hi", False), (b"\x00", True)]
    assert "s1" not in backend.sessions  # nothing to resume: forgotten


async def test_a_message_carries_every_field_the_application_set() -> None:
    backend, out = Recorder(), _outbox()
    await backend._handle(_opened("s1"), out)
    session = backend.sessions["s1"]
    session.send("typing", droppable=True, coalesce_key="typing:ann")
    session.send(b"\x01", durable=True)
    session.send("")
    sent = [e.message for e in await out.take()]
    fields = [
        (m.session_id, m.data, m.binary, m.droppable, m.coalesce_key, m.message_id) for m in sent
    ]
    assert fields == [
        ("s1", b"typing", False, True, "typing:ann", 0),
        ("s1", b"\x01", True, False, "", 1),
        ("s1", b"", False, False, "", 0),
    ]


async def test_durable_messages_are_kept_until_persisted_and_sent_again_on_a_resume() -> None:
    backend, first, second = Recorder(), _outbox(), _outbox()
    await backend._handle(_opened("s1"), first)
    session = backend.sessions["s1"]
    for n in range(1, 5):
        session.send(f"m{n}", durable=True)
    await backend._handle(_persisted("s1", 2), first)
    assert session.unacked == 2
    await backend._handle(_closed("s1"), first)  # its pod drained: kept for the resume
    assert backend.sessions["s1"] is session and not session.connected
    session.send("m5", durable=True)  # sent while no gateway holds it
    await first.take()
    await backend._handle(_opened("s1", resumed=True, last_id=3), second)
    assert backend.sessions["s1"] is session and session.resumed
    again = [(e.message.data, e.message.message_id) for e in await second.take()]
    assert again == [(b"m4", 4), (b"m5", 5)]


async def test_a_late_close_from_the_old_pod_does_not_end_a_resumed_session() -> None:
    backend, old, new = Recorder(), _outbox(), _outbox()
    await backend._handle(_opened("s1"), old)
    backend.sessions["s1"].send("x", durable=True)
    await backend._handle(_opened("s1", resumed=True), new)
    await backend._handle(_closed("s1"), old)  # the old pod's close arrives after the resume
    assert backend.sessions["s1"].connected
    assert ("close", 1000) not in backend.heard


@pytest.mark.parametrize(
    ("decision", "accept", "data", "replace", "reason"),
    [
        (ACCEPT, True, b"", False, ""),
        (Decision(True, data="stamped"), True, b"stamped", True, ""),
        (reject("no shouting"), False, b"", False, "no shouting"),
    ],
)
async def test_a_client_publication_is_judged_and_answered_with_its_request_id(
    decision: Decision, accept: bool, data: bytes, replace: bool, reason: str
) -> None:
    backend, out = Recorder(decision), _outbox()
    await backend._handle(_opened("s1"), out)
    publication = pb.ClientPublication(
        session_id="s1", request_id=7, channel="chat:1", data=b"HI", user_id="u-s1"
    )
    await backend._handle(pb.GatewayEvent(publication=publication), out)
    [answer] = [e.decision for e in await out.take() if e.HasField("decision")]
    assert backend.heard[-1] == ("publication", ("chat:1", "HI"))
    assert (answer.session_id, answer.request_id, answer.accept) == ("s1", 7, accept)
    assert (answer.data, answer.replace, answer.reason) == (data, replace, reason)


async def test_subscriptions_closes_and_publications_become_bridge_events() -> None:
    backend, out = Recorder(), _outbox()
    with pytest.raises(NoGateway):
        backend.publish("news", "x")
    backend._streams["pod-1"] = out  # a gateway is connected
    await backend._handle(_opened("s1"), out)
    session = backend.sessions["s1"]
    session.subscribe("chat:1")
    session.unsubscribe("chat:1")
    backend.publish("news", "hello")
    session.close(4000, "bye")
    events = await out.take()
    assert events[0].subscribe == pb.Subscribe(session_id="s1", channel="chat:1")
    assert events[1].unsubscribe == pb.Unsubscribe(session_id="s1", channel="chat:1")
    assert events[2].publish == pb.Publish(channel="news", data=b"hello")
    assert events[3].close == pb.CloseSession(session_id="s1", code=4000, reason="bye")
