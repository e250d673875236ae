"""The gateway side of the backend bridge (``proto/wsfleet/api/bridge.proto``).

One :class:`GrpcBackendLink` per gRPC backend holds one bidirectional stream
on which all of this pod's sessions for that backend are multiplexed (an idle
session costs a dict entry). WebSocket backends (``ws://…``) get a
:class:`~sidecar.backend_ws.WebSocketBackendLink`: one upstream socket per
session. :class:`sidecar.backends.BackendBridge` picks a backend per session by
consistent hashing of its routing key over the links that are up.

A backend that goes away: its sessions move to the backend that now owns
their key (``backend_loss="move"``; the new backend gets ``opened`` again) or
are closed with 1013 (``"close"``, or when no backend is up). Nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import structlog

from sidecar.core.channel_frames import ChannelRequest
from sidecar.core.close_codes import CloseCode
from sidecar.metrics import RoundTripSampler
from wsfleet import tracing
from wsfleet.api import bridge_pb2 as pb
from wsfleet.batch_spacing import BRIDGE_BATCH_SPACING_S
from wsfleet.bridge_limits import GRPC_OPTIONS
from wsfleet.cancelling import cancel_and_wait
from wsfleet.headers import POD_HEADER
from wsfleet.outbox import Outbox

log = structlog.get_logger()

CONNECT_METHOD = "/wsfleet.bridge.v2.Bridge/Connect"
MAX_BATCH_EVENTS = 512  # events in one GatewayBatch, at most ...
MAX_BATCH_BYTES = 1 << 20  # ... and this much message data (a larger message goes alone)


class SessionSink(Protocol):
    """Where a backend's events for one session go (the client connection)."""

    @property
    def backend_last_id(self) -> int:
        """The highest backend message_id made durable for this session."""

    def deliver(
        self, data: bytes, binary: bool, droppable: bool, coalesce_key: str, message_id: int
    ) -> None: ...

    def close_requested(self, code: int, reason: str) -> None: ...

    def rebind(self, link: BackendLink) -> None: ...

    def session_info(self) -> SessionInfo:
        """Who the session is, as the backend hears it (made when needed, not kept)."""

    def subscribe_requested(self, channel: str) -> None: ...

    def unsubscribe_requested(self, channel: str) -> None: ...

    def publication_decided(
        self, request_id: int, accept: bool, data: bytes | None, binary: bool, reason: str
    ) -> None:
        """The backend's answer to a client's publication (``data`` None: unchanged)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    user_id: str
    routing_key: str
    transport: str
    pod_id: str


LostSessions = list[SessionSink]


class BackendLink(Protocol):
    """One backend, whatever it speaks."""

    address: str

    @property
    def is_up(self) -> bool: ...

    def start(self, on_lost: Callable[[BackendLink, LostSessions], None]) -> None: ...

    async def stop(self) -> None: ...

    def open(self, sink: SessionSink, resumed: bool = False, last_message_id: int = 0) -> None: ...

    async def send(self, session_id: str, data: bytes, binary: bool, seq: int = 0) -> None: ...

    def persisted(self, session_id: str, message_id: int) -> None: ...

    def close(self, session_id: str, code: int, reason: str) -> None: ...

    def ask_publication(self, session_id: str, user_id: str, request: ChannelRequest) -> bool:
        """Send a client's publication for approval; False if this backend cannot judge."""


# Where a backend's publications go (the gateway's channel service).
OnPublish = Callable[[str, bytes, bool], None]


class GrpcBackendLink:
    """A gRPC backend: one multiplexed stream, reconnecting with backoff.

    Events wait in an :class:`~wsfleet.outbox.Outbox`; one writer sends whatever queued
    up as one ``GatewayBatch`` per write, and every ``BackendBatch`` read is dispatched
    event by event. A send waits only while the outbox is full (backpressure).
    """

    def __init__(
        self,
        address: str,
        pod_id: str,
        queue_size: int = 10_000,
        on_publish: OnPublish | None = None,
        spacing_s: float = BRIDGE_BATCH_SPACING_S,
    ) -> None:
        self.address = address
        self.on_publish: OnPublish = on_publish or (lambda channel, data, binary: None)
        self._pod_id = pod_id
        self._sessions: dict[str, SessionSink] = {}  # by session id
        self._outbox: Outbox[pb.GatewayEvent] = Outbox(
            queue_size, MAX_BATCH_EVENTS, MAX_BATCH_BYTES, spacing_s
        )
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.round_trips = RoundTripSampler()  # wsfleet_gateway_bridge_round_trip_seconds
        self._on_lost: Callable[[BackendLink, LostSessions], None] = lambda link, lost: None

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def start(self, on_lost: Callable[[BackendLink, LostSessions], None]) -> None:
        self._on_lost = on_lost
        self._task = asyncio.create_task(self._run(), name=f"backend-link-{self.address}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def open(self, sink: SessionSink, resumed: bool = False, last_message_id: int = 0) -> None:
        info = sink.session_info()
        event = pb.GatewayEvent()  # filled in place (first: a field protobuf refuses
        opened = event.opened  # leaves no session behind)
        session = opened.session
        session.session_id = info.session_id
        session.user_id = info.user_id
        session.routing_key = info.routing_key
        session.transport = info.transport
        session.pod_id = info.pod_id
        opened.resumed = resumed
        opened.last_message_id = last_message_id
        carrier = tracing.current_carrier()  # the handshake's trace (None: not tracing)
        if carrier is not None:
            opened.trace_context.update(carrier)
        self._sessions[info.session_id] = sink
        self._outbox.put(event)

    def persisted(self, session_id: str, message_id: int) -> None:
        """A watermark: only the highest of a batch is sent."""
        if session_id in self._sessions:
            event = pb.Persisted(session_id=session_id, message_id=message_id)
            self._outbox.put_latest(session_id, pb.GatewayEvent(persisted=event))

    async def send(self, session_id: str, data: bytes, binary: bool, seq: int = 0) -> None:
        """Queue a client message; waits only while the outbox is full (backpressure)."""
        if self._outbox.full:
            await self._outbox.wait_space()
        event = pb.GatewayEvent()  # filled in place: a message passed in would be copied
        message = event.message
        message.session_id = session_id
        message.data = data
        if seq:
            message.seq = seq
        if binary:
            message.binary = True
        self._outbox.put(event, len(data))

    def ask_publication(self, session_id: str, user_id: str, request: ChannelRequest) -> bool:
        if session_id not in self._sessions or not self.is_up or self._outbox.full:
            return False
        publication = pb.ClientPublication(
            session_id=session_id,
            request_id=request.request_id,
            channel=request.channel,
            data=request.data,
            binary=request.binary,
            user_id=user_id,
        )
        self._outbox.put(pb.GatewayEvent(publication=publication), len(request.data))
        return True

    def close(self, session_id: str, code: int, reason: str) -> None:
        if self._sessions.pop(session_id, None) is None:
            return
        closed = pb.SessionClosed(session_id=session_id, code=code, reason=reason)
        self._outbox.put(pb.GatewayEvent(closed=closed))

    async def _run(self) -> None:
        delay_s = 0.1
        while True:
            try:
                await self._serve_stream()
                delay_s = 0.1
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, OSError, TimeoutError) as exc:
                log.warning("backend_link_down", backend=self.address, error=str(exc)[:200])
            self._lost()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)

    async def _serve_stream(self) -> None:
        async with grpc.aio.insecure_channel(self.address, options=GRPC_OPTIONS) as channel:
            await asyncio.wait_for(channel.channel_ready(), 5.0)
            call = channel.stream_stream(
                CONNECT_METHOD,
                request_serializer=pb.GatewayBatch.SerializeToString,
                response_deserializer=pb.BackendBatch.FromString,
            )(metadata=((POD_HEADER, self._pod_id),))
            self._outbox.clear()  # events for the sessions of a stream that is gone
            writer = asyncio.create_task(self._write(call))
            self._up.set()
            log.info("backend_link_up", backend=self.address)
            try:
                while True:
                    batch = await call.read()
                    if batch is grpc.aio.EOF:
                        log.warning("backend_stream_ended", backend=self.address)
                        return
                    self.round_trips.received(
                        e.message.session_id for e in batch.events if e.HasField("message")
                    )
                    for event in batch.events:
                        self._dispatch(event)
            finally:
                self.round_trips.reset()
                self._up.clear()
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await writer
                call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            events = await self._outbox.take()
            self.round_trips.sent(e.message.session_id for e in events if e.HasField("message"))
            await call.write(pb.GatewayBatch(events=events))

    def _dispatch(self, event: pb.BackendEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "message":
            sink = self._sessions.get(event.message.session_id)
            if sink is not None:
                message = event.message
                sink.deliver(
                    message.data,
                    message.binary,
                    message.droppable,
                    message.coalesce_key,
                    message.message_id,
                )
        elif kind == "close":
            sink = self._sessions.pop(event.close.session_id, None)
            if sink is not None:
                sink.close_requested(event.close.code or CloseCode.NORMAL, event.close.reason)
        elif kind == "publish":
            self.on_publish(event.publish.channel, event.publish.data, event.publish.binary)
        elif kind == "decision":
            decision = event.decision
            sink = self._sessions.get(decision.session_id)
            if sink is not None:
                sink.publication_decided(
                    decision.request_id,
                    decision.accept,
                    decision.data if decision.replace else None,
                    decision.binary,
                    decision.reason,
                )
        elif kind == "subscribe":
            sink = self._sessions.get(event.subscribe.session_id)
            if sink is not None:
                sink.subscribe_requested(event.subscribe.channel)
        elif kind == "unsubscribe":
            sink = self._sessions.get(event.unsubscribe.session_id)
            if sink is not None:
                sink.unsubscribe_requested(event.unsubscribe.channel)

    def _lost(self) -> None:
        self._up.clear()
        sessions, self._sessions = self._sessions, {}
        if sessions:
            self._on_lost(self, list(sessions.values()))
