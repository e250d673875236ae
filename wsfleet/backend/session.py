"""One client session as a backend sees it, and what it sends.

A session lives as long as its client: it may move from one gateway stream to another
(its pod drained or died, and the client resumed elsewhere); its messages follow it.
Messages sent with ``durable=True`` carry increasing ids and are kept until the gateway
says they are in the session's replay buffer (``Persisted``); when the session reopens
resumed, those after the last persisted id are sent again: nothing is lost with a pod.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from wsfleet.api import bridge_pb2 as pb

MAX_UNACKED = 10_000  # durable messages kept per session, at most (the oldest go first)


class EventSink(Protocol):
    """Where a session's events go: the outbox of the gateway stream that holds it."""

    def put(self, item: pb.BackendEvent, size: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who a session is: its id (stable across resumes in protocol v1), its user, the
    routing key that chose this backend, its transport and the pod holding it now."""

    session_id: str
    user_id: str
    routing_key: str
    transport: str
    pod_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class Session:
    """What a backend does with one client session: send, close, subscribe."""

    __slots__ = ("_next_id", "_sink", "_unacked", "info", "resumed", "state")

    def __init__(self, info: SessionInfo, sink: EventSink | None) -> None:
        self.info = info
        self.resumed = False
        self.state: object = None  # the application's own, kept across resumes
        self._sink = sink
        self._next_id = 1
        self._unacked: OrderedDict[int, tuple[bytes, bool]] = OrderedDict()

    @property
    def id(self) -> str:
        return self.info.session_id

    @property
    def user_id(self) -> str:
        return self.info.user_id

    @property
    def connected(self) -> bool:
        """Whether a gateway holds it now (between a pod's loss and the resume: no)."""
        return self._sink is not None

    @property
    def sink(self) -> EventSink | None:
        """The stream that holds it now (None: none)."""
        return self._sink

    @property
    def unacked(self) -> int:
        """Durable messages sent and not yet persisted by a gateway."""
        return len(self._unacked)

    def send(
        self,
        data: bytes | str,
        *,
        droppable: bool = False,
        coalesce_key: str = "",
        durable: bool = False,
    ) -> None:
        """A message for the client. ``droppable``: may be shed when the client reads
        slowly (presence, typing); ``coalesce_key``: replaces a queued one with the same
        key; ``durable``: kept until persisted and sent again after a resume."""
        payload, binary = _payload(data)
        message_id = 0
        if durable:
            message_id = self._next_id
            self._next_id += 1
            self._unacked[message_id] = (payload, binary)
            while len(self._unacked) > MAX_UNACKED:
                self._unacked.popitem(last=False)
        self._put_message(payload, binary, droppable, coalesce_key, message_id)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session: the gateway closes the client with ``code`` (1000, 1001, 1008,
        1011-1014 or 3000-4999) and ``reason``."""
        if self._sink is not None:
            close = pb.CloseSession(session_id=self.id, code=code, reason=reason)
            self._sink.put(pb.BackendEvent(close=close))

    def subscribe(self, channel: str) -> None:
        """Subscribe the session to ``channel`` (no permission needed: the backend says so).
        A session that resumes keeps it: its client subscribes again and recovers."""
        if self._sink is not None:
            event = pb.Subscribe(session_id=self.id, channel=channel)
            self._sink.put(pb.BackendEvent(subscribe=event))

    def unsubscribe(self, channel: str) -> None:
        if self._sink is not None:
            event = pb.Unsubscribe(session_id=self.id, channel=channel)
            self._sink.put(pb.BackendEvent(unsubscribe=event))

    # -- what the kit does with it --------------------------------------------------------

    def bind(self, sink: EventSink | None) -> None:
        self._sink = sink

    def persisted(self, message_id: int) -> None:
        """The gateway made everything up to ``message_id`` durable: forget it."""
        while self._unacked and next(iter(self._unacked)) <= message_id:
            self._unacked.popitem(last=False)

    def resend_after(self, message_id: int) -> int:
        """Send again, in order, the durable messages after ``message_id`` (a resume);
        how many."""
        self.persisted(message_id)
        for unacked_id, (payload, binary) in self._unacked.items():
            self._put_message(payload, binary, False, "", unacked_id)
        return len(self._unacked)

    def _put_message(
        self, payload: bytes, binary: bool, droppable: bool, coalesce_key: str, message_id: int
    ) -> None:
        if self._sink is None:
            return  # between pods: a durable message goes out again on the resume
        event = pb.BackendEvent()  # filled in place: a message passed in would be copied
        message = event.message
        message.session_id = self.id
        message.data = payload
        if binary:  # (a field left at its default costs nothing to leave out)
            message.binary = True
        if droppable:
            message.droppable = True
        if coalesce_key:
            message.coalesce_key = coalesce_key
        if message_id:
            message.message_id = message_id
        self._sink.put(event, len(payload))


def _payload(data: bytes | str) -> tuple[bytes, bool]:
    return (data.encode(), False) if isinstance(data, str) else (bytes(data), True)
