"""The backend kit: write a wsfleet backend as a class with a few methods.

::

    from wsfleet.backend import Backend, Session, serve

    class Echo(Backend):
        def on_message(self, session: Session, data: str | bytes) -> None:
            session.send(data)

    asyncio.run(serve(Echo(), port=9000))      # then: wsfleet sidecar --backend host:9000

Gateways open one gRPC stream each (``proto/wsfleet/api/bridge.proto``, the generated
stubs in ``wsfleet.api.bridge_pb2_grpc``); the kit reads their batches, calls the
handlers in order, and writes everything the handlers send as one batch per turn of the
event loop (``wsfleet.outbox.Outbox``). Handlers are plain methods or coroutines (a
coroutine is awaited before the stream's next event: a slow handler slows its gateway's
stream, it does not pile up). Sessions outlive streams: a session that reopens resumed on
another gateway is the same :class:`~wsfleet.backend.session.Session`, and its durable
messages the gateway had not persisted are sent again. A session whose client went away
(or whose gateway did) is kept for a resume for :data:`DETACHED_TTL_S` while it has
durable messages in flight or application ``state``; otherwise it is forgotten at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from wsfleet import tracing
from wsfleet.api import bridge_pb2 as pb
from wsfleet.api import bridge_pb2_grpc as pb_grpc
from wsfleet.backend.session import Session, SessionInfo
from wsfleet.batch_spacing import BRIDGE_BATCH_SPACING_S
from wsfleet.bridge_limits import GRPC_OPTIONS
from wsfleet.errors import StartupError
from wsfleet.headers import POD_HEADER
from wsfleet.outbox import Outbox, OutboxClosed
from wsfleet.stop_signals import signal_events

log = structlog.get_logger()

MAX_BATCH_EVENTS = 512  # events in one BackendBatch, at most ...
MAX_BATCH_BYTES = 1 << 20  # ... and this much data (a larger message goes alone)
OUTBOX_LIMIT = 100_000  # events queued for one gateway; beyond, the oldest stream waits
DETACHED_TTL_S = 300.0  # a session no gateway holds is forgotten after this long


@dataclass(frozen=True, slots=True)
class Decision:
    """A backend's answer to a client's publication (namespaces with
    ``publish_via_backend``): accept it (with other data, if ``data`` is given) or not."""

    accept: bool
    data: bytes | str | None = None
    reason: str = ""


ACCEPT = Decision(True)


def reject(reason: str) -> Decision:
    return Decision(False, reason=reason)


class NoGateway(Exception):
    """No gateway is connected: there is nothing to publish through."""


class Backend:
    """Subclass and override the ``on_*`` handlers you need. Every handler may be a plain
    method or a coroutine."""

    batch_spacing_s: float = BRIDGE_BATCH_SPACING_S
    """How far apart this backend's batches to one gateway leave while busy (a subclass may
    lower it for latency, at the cost of more gRPC writes)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self._streams: dict[str, Outbox[pb.BackendEvent]] = {}  # pod id -> its outbox
        self._detached: dict[str, float] = {}  # session id -> when its gateway went away

    # -- handlers ------------------------------------------------------------------------

    def on_open(self, session: Session) -> Awaitable[None] | None:
        """A session opened (or, ``session.resumed``, came back on some gateway)."""
        return None

    def on_message(self, session: Session, data: str | bytes) -> Awaitable[None] | None:
        """A message from the client (text as ``str``, binary as ``bytes``)."""
        return None

    def on_close(self, session: Session, code: int, reason: str) -> Awaitable[None] | None:
        """The client went away (or the gateway closed it)."""
        return None

    def on_publication(
        self, session: Session, channel: str, data: str | bytes
    ) -> Decision | Awaitable[Decision]:
        """A client publishes to a channel whose namespace asks the backend first."""
        return ACCEPT

    # -- what a backend can do besides answering sessions --------------------------------

    @property
    def gateways(self) -> list[str]:
        """The pods whose gateways are connected now."""
        return list(self._streams)

    def publish(self, channel: str, data: str | bytes) -> None:
        """Publish to a channel through one connected gateway (batched with its other
        events); every gateway with subscribers gets it once. :class:`NoGateway` if none is
        connected."""
        if not self._streams:
            raise NoGateway("no gateway is connected")
        payload, binary = (data.encode(), False) if isinstance(data, str) else (data, True)
        outbox = next(iter(self._streams.values()))
        publish = pb.Publish(channel=channel, data=payload, binary=binary)
        outbox.put(pb.BackendEvent(publish=publish), len(payload))

    # -- the bridge ------------------------------------------------------------------------

    async def connect(
        self, batches: AsyncIterator[pb.GatewayBatch], context: Any
    ) -> AsyncIterator[pb.BackendBatch]:
        """One gateway's stream: its batches in, this backend's batches out."""
        pod = dict(context.invocation_metadata() or ()).get(POD_HEADER, "?")
        log.info("gateway_connected", pod_id=pod)
        out: Outbox[pb.BackendEvent] = Outbox(
            OUTBOX_LIMIT, MAX_BATCH_EVENTS, MAX_BATCH_BYTES, self.batch_spacing_s
        )
        self._streams[pod] = out
        reader = asyncio.create_task(self._read(batches, out, pod))
        try:
            while True:
                try:
                    events = await out.take()
                except OutboxClosed:
                    return
                yield pb.BackendBatch(events=events)
        finally:
            reader.cancel()
            if self._streams.get(pod) is out:
                del self._streams[pod]
            for session in list(self.sessions.values()):
                if session.sink is out:
                    self._detach(session)  # it resumes on another gateway, or expires
            log.info("gateway_disconnected", pod_id=pod)

    async def _read(
        self, batches: AsyncIterator[pb.GatewayBatch], out: Outbox[pb.BackendEvent], pod: str
    ) -> None:
        try:
            async for batch in batches:
                for event in batch.events:
                    try:
                        await self._handle(event, out)
                    except Exception:  # one event's failure does not end a gateway's stream
                        log.exception("backend_handler_failed", pod_id=pod)
        finally:
            out.close()

    async def _handle(self, event: pb.GatewayEvent, out: Outbox[pb.BackendEvent]) -> None:
        kind = event.WhichOneof("event")
        if kind == "opened":
            await self._opened(event.opened, out)
        elif kind == "message":
            session = self.sessions.get(event.message.session_id)
            if session is not None:
                message = event.message
                data: str | bytes = (
                    message.data if message.binary else message.data.decode(errors="replace")
                )
                await _done(self.on_message(session, data))
        elif kind == "persisted":
            session = self.sessions.get(event.persisted.session_id)
            if session is not None:
                session.persisted(event.persisted.message_id)
        elif kind == "closed":
            session = self.sessions.get(event.closed.session_id)
            if session is not None and session.sink is out:  # not a resumed one's old pod
                self._detach(session)
                await _done(self.on_close(session, event.closed.code, event.closed.reason))
        elif kind == "publication":
            await self._judge(event.publication, out)

    async def _opened(self, opened: pb.SessionOpened, out: Outbox[pb.BackendEvent]) -> None:
        info = opened.session
        session = self.sessions.get(info.session_id)
        fresh = SessionInfo(
            info.session_id,
            info.user_id,
            info.routing_key,
            info.transport,
            info.pod_id,
            dict(info.metadata),
        )
        if session is None:
            session = self.sessions[info.session_id] = Session(fresh, out)
        else:  # the same session, back on some gateway
            session.info = fresh
            session.bind(out)
        self._detached.pop(session.id, None)  # (re-inserted last when it detaches again)
        session.resumed = opened.resumed
        if opened.resumed:
            session.resend_after(opened.last_message_id)
        # a child of the gateway's handshake span: the application's spans in on_open too
        with tracing.continued(
            tracing.BACKEND_OPEN_SPAN,
            opened.trace_context,
            session_id=info.session_id,
            transport=info.transport,
        ):
            await _done(self.on_open(session))

    async def _judge(self, publication: pb.ClientPublication, out: Outbox[pb.BackendEvent]) -> None:
        session = self.sessions.get(publication.session_id)
        data: str | bytes = (
            publication.data if publication.binary else publication.data.decode(errors="replace")
        )
        if session is None:
            decision = reject("unknown session")
        else:
            answer = self.on_publication(session, publication.channel, data)
            decision = await answer if inspect.isawaitable(answer) else answer
        payload, binary, replace = b"", publication.binary, decision.data is not None
        if decision.data is not None:
            payload, binary = (
                (decision.data.encode(), False)
                if isinstance(decision.data, str)
                else (decision.data, True)
            )
        answer_event = pb.PublicationDecision(
            session_id=publication.session_id,
            request_id=publication.request_id,
            accept=decision.accept,
            data=payload,
            binary=binary,
            replace=replace,
            reason=decision.reason,
        )
        out.put(pb.BackendEvent(decision=answer_event), len(payload))

    def _detach(self, session: Session) -> None:
        """No gateway holds ``session`` now: keep it for a resume if it has something to
        resume (durable messages in flight, application state), else forget it."""
        session.bind(None)
        now = time.monotonic()
        if session.unacked or session.state is not None:
            self._detached[session.id] = now
        else:
            self.sessions.pop(session.id, None)
            self._detached.pop(session.id, None)
        if self._detached and now - next(iter(self._detached.values())) > DETACHED_TTL_S:
            for session_id, since in list(self._detached.items()):
                if now - since <= DETACHED_TTL_S:
                    break
                del self._detached[session_id]
                self.sessions.pop(session_id, None)


class _Servicer(pb_grpc.BridgeServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def Connect(  # gRPC's name; an async generator, so that grpc.aio streams it
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.BackendBatch]:
        async for batch in self._backend.connect(request_iterator, context):
            yield batch


async def start(
    backend: Backend, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.aio.Server, int]:
    """Serve ``backend`` on ``host:port`` (0: any free port); the server and its port."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    pb_grpc.add_BridgeServicer_to_server(_Servicer(backend), server)  # type: ignore[no-untyped-call]
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot listen on {host}:{port} (port in use?)")
    await server.start()
    return server, bound


async def serve(backend: Backend, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop, _ = signal_events()
    server, bound = await start(backend, host, port)
    log.info("backend_started", port=bound)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await server.stop(grace=1.0)


async def _done(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result
