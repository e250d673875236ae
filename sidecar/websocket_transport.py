"""``/ws``: the WebSocket transport.

Raw clients send and receive bare messages. Clients that offer the
``wsfleet.v1`` subprotocol (or ask ``?protocol=v1``) speak protocol v1: JSON
envelopes with sequence numbers, and resume with ``?session=&last_seq=``.
Every frame from the client is liveness; pongs feed the heartbeat schedule.

The public port reads an upgrade's request head itself (:mod:`sidecar.public_port`) and
hands it to :func:`serve_upgrade`; an upgrade on a connection aiohttp already serves (a
keep-alive connection that carried other requests first) comes through
:func:`handle_websocket`. Both run the same handshake and frame layer, the gateway's own
(:mod:`sidecar.core.ws_handshake`, :mod:`sidecar.core.ws_reader`,
:mod:`sidecar.core.ws_frames`, :mod:`sidecar.core.ws_deflate`): it writes the 101 itself,
takes the connection's bytes through its :class:`Wire` and writes its frames straight to
the transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from sidecar.admission import Refusal, head_of
from sidecar.client_session import ClientSession, open_session, start_session
from sidecar.core import CloseCode, envelope, fit_reason, ws_frames
from sidecar.core.http_head import RequestHead, http_answer
from sidecar.core.lingering_close import LingeringClose, LingerVerdict
from sidecar.core.ws_deflate import Deflate, agree
from sidecar.core.ws_handshake import VERSION, NotAnUpgrade, accept_key, switching_protocols
from sidecar.core.ws_reader import FAILED, Event, FrameReader, close_payload
from sidecar.edge_drain import note_edge
from sidecar.gateway import GATEWAY_KEY, Gateway
from wsfleet import tracing
from wsfleet.headers import POD_HEADER

log = structlog.get_logger()

PING_SKIP_BUFFER_BYTES = 64 * 1024
WRITE_HIGH_WATER_BYTES = 64 * 1024  # beyond this in the socket's buffer, wait for it to drain
# the read loop's own events, beside the reader's: a ping counted and due a pong once the
# socket's buffer drains; a control frame over the limit that closes the session
_PONG_DUE = 0x100
_CLOSE_DUE = 0x101
READ_QUEUE_BYTES = 64 * 1024  # client messages read, not yet handed on: beyond, stop reading
TRANSPORT = "websocket"


class Wire(Protocol):
    """Where an upgraded connection's bytes come from, beside the transport it writes to:
    the public port's own protocol, or aiohttp's for an upgrade aiohttp parsed."""

    def attach(self, connection: WebSocketConnection) -> None:
        """From now on the connection's bytes go to ``connection.feed_data`` (and its end
        to ``feed_eof``), the bytes already read after the request head first."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def drain(self) -> Awaitable[None]:
        """Resolves once the transport's write buffer is below its high-water mark."""
        ...


class AiohttpWire:
    """The wire of an upgrade aiohttp parsed: its protocol's parser slot and its writer."""

    __slots__ = ("_protocol", "_writer")

    def __init__(self, request: web.Request) -> None:
        self._protocol: Any = request.protocol  # typed for aiohttp's reader; takes any feed_data
        self._writer: AbstractStreamWriter = request.writer

    def attach(self, connection: WebSocketConnection) -> None:
        self._protocol.set_parser(connection)

    def pause_reading(self) -> None:
        self._protocol.pause_reading()

    def resume_reading(self) -> None:
        self._protocol.resume_reading()

    def drain(self) -> Awaitable[None]:
        return self._writer.drain()


class TurnWrites:
    """The WebSocket frames of one turn of the event loop, written at its end: one write
    per socket per turn, however many frames it got meanwhile (a fan-out of several
    publications, a bridge batch with several messages for one session). Envoy then reads
    them in one go too."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[WebSocketConnection] = []
        self._scheduled = False

    def add(self, channel: WebSocketConnection) -> None:
        self._dirty.append(channel)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for channel in dirty:
            channel.flush()


TURN_WRITES = TurnWrites()  # the sidecar's one event loop


class WebSocketConnection:
    """One upgraded connection: the client's bytes come from its :class:`Wire`
    (:meth:`feed_data`) through the :class:`FrameReader`; frames go to the transport whole,
    gathered into one write per turn of the event loop (:class:`TurnWrites`). It is the
    session's :class:`~sidecar.client_session.Channel`, and closes lingering
    (:mod:`sidecar.core.lingering_close`): once the gateway's close frame is on its way,
    what the client still sends is skipped until its close frame, and only then is TCP
    closed."""

    __slots__ = (
        "_closing",
        "_deflate",
        "_eof",
        "_events",
        "_linger",
        "_paused",
        "_pending",
        "_pending_bytes",
        "_queued",
        "_reader",
        "_session",
        "_transport",
        "_upgrade",
        "_waiter",
        "_wire",
        "_written",
        "close_code",
    )

    def __init__(
        self,
        max_message_bytes: int,
        transport: asyncio.Transport,
        wire: Wire,
        deflate: Deflate | None,
    ) -> None:
        self._transport = transport
        self._wire = wire
        self._deflate = deflate
        self._reader = FrameReader(max_message_bytes, deflate)
        self._upgrade: bytes | None = None  # the 101 not sent yet: it leaves with the first frame
        self._pending: list[bytes] | None = None  # frames of this turn, not written yet
        self._pending_bytes = 0
        self._events: list[Event] = []  # read from the client, not handed on yet
        self._queued = 0  # their bytes
        self._waiter: asyncio.Future[None] | None = None  # the read loop, waiting for events
        self._paused = False
        self._eof = False
        self._closing = False  # the gateway's close frame (or its answer to the client's) sent
        self._linger: _Linger | None = None
        self._session: ClientSession | None = None  # once open: pings answered as they come
        self._written = False  # frames written since the heartbeats last asked
        self.close_code: int | None = None

    def start(self, upgrade: bytes, hold: bool) -> None:
        """Take the connection's bytes from the wire, and send the 101 (now, or with the
        first frame when ``hold``: the v1 welcome follows at once, in the same write)."""
        self._wire.attach(self)
        if hold:
            self._upgrade = upgrade
        else:
            self._transport.write(upgrade)

    def open(self, session: ClientSession) -> None:
        """The session is open: pings and pongs are handled as they are read."""
        self._session = session

    # -- the channel: frames to the client

    @property
    def takes_wire(self) -> bool:
        return self._deflate is None

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        if wire is not None and self._deflate is None:  # made once for many sockets
            return self._write_whole(wire)
        if binary:
            opcode = ws_frames.OP_BINARY
        else:
            opcode = ws_frames.OP_TEXT
            if not frame.isascii():  # a text frame must be UTF-8: invalid bytes become U+FFFD
                frame = ws_frames.valid_utf8(frame)
        if self._deflate is not None:
            frame = self._deflate.compress(frame)
            opcode |= ws_frames.RSV1
        return self._write_whole(ws_frames.server_frame(opcode, frame))

    def _write_whole(self, whole: bytes) -> Awaitable[None] | None:
        """One whole frame for the socket, written with the others of this turn."""
        transport = self._transport
        if self._closing or transport.is_closing():
            raise ConnectionResetError("the client is gone")
        if self._upgrade is not None:
            whole, self._upgrade = self._upgrade + whole, None  # the 101 + this frame
        pending = self._pending
        if pending is None:
            self._pending = [whole]
            TURN_WRITES.add(self)
        else:
            pending.append(whole)
        self._pending_bytes += len(whole)
        if self._pending_bytes + transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            self.flush()
            return self._wire.drain()
        return None

    def flush(self) -> None:
        """Write the frames gathered this turn, in one transport write."""
        pending = self._pending
        if pending is None:
            return
        self._pending, self._pending_bytes = None, 0
        transport = self._transport
        if not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            self._written = True

    def written_to(self) -> bool:
        written, self._written = self._written, False
        return written

    async def close(self, code: int, reason: str) -> None:
        """The gateway's close frame, after every frame written before it; then TCP closes
        when the client's close frame arrives (or at the lingering close's bounds)."""
        if self._closing:
            return
        if self.close_code is None:
            self.close_code = code
        self._send_close(ws_frames.close_frame(code, fit_reason(reason)))
        transport = self._transport
        if transport.is_closing():
            return
        if self._reader.close_received:  # the client's close is in: nothing to wait for
            transport.close()
            return
        self._reader.discard()
        self._linger = _Linger(transport, self._wake)
        if self._paused:  # nothing drains the queue now: read (and skip) to the close
            self._paused = False
            self._wire.resume_reading()

    def _send_close(self, frame: bytes) -> None:
        self.flush()
        self._closing = True
        if self._upgrade is not None:  # closed before its first frame: the 101 goes first
            frame, self._upgrade = self._upgrade + frame, None
        if not self._transport.is_closing():
            self._transport.write(frame)

    def abort(self) -> None:
        self._pending, self._pending_bytes = None, 0
        self._closing = True
        self._transport.abort()

    def idle_for(self, now: float) -> float:
        return 0.0

    def ping(self) -> None:
        """Write an empty ping frame straight to the socket: no task, no await.

        A socket whose write buffer is full is not pinged: it is not reading, and will be
        found dead if it never answers.
        """
        transport = self._transport
        if self._closing or transport.is_closing():
            return
        if transport.get_write_buffer_size() < PING_SKIP_BUFFER_BYTES:
            transport.write(ws_frames.PING)

    # -- the wire: the client's bytes

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        events = self._reader.feed(data)
        linger = self._linger
        if linger is not None:  # the gateway has closed: skipped, until the client's close
            linger.received(len(data), self._reader.close_received)
            return False, b""
        if events:
            session = self._session
            queue = self._events
            for event in events:
                opcode = event[0]
                if session is not None and (
                    opcode == ws_frames.OP_PING or opcode == ws_frames.OP_PONG
                ):
                    left = self._control_now(session, opcode, event[1])
                    if left is None:
                        continue
                    event = left
                queue.append(event)
                self._queued += len(event[1])
            if not queue:
                return False, b""
            if self._queued > READ_QUEUE_BYTES and not self._paused:
                self._paused = True
                self._wire.pause_reading()
            self._wake()
        return False, b""

    def _control_now(self, session: ClientSession, opcode: int, data: bytes) -> Event | None:
        """A ping or a pong, handled as it is read (no wake-up of the read loop; the pong
        written at once), counted like data frames (one bucket: a ping costs a pong
        write). What is left for the read loop, if anything: a close for the limit, or a
        pong to write once the socket's buffer has drained."""
        if not session.core.control_frame(len(data), session.now()):
            if session.core.closing is None:
                return None  # over the limit, rate_limit_action=drop: not answered
            return (_CLOSE_DUE, b"")
        table = session._gateway.table
        if opcode == ws_frames.OP_PONG:
            table.pong(session.connection_id)
            return None
        table.activity(session.connection_id)
        if self._closing or self._transport.is_closing():
            return None
        if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            return (_PONG_DUE, data)  # the loop writes it after the drain: reading waits
        self._write_whole(ws_frames.server_frame(ws_frames.OP_PONG, data))
        self.flush()
        return None

    def feed_eof(self) -> None:
        self._eof = True
        if self._linger is not None:
            self._linger.finish()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the read loop

    async def serve(self, session: ClientSession) -> None:
        """Hand what the client sends to its session, until it closes, fails or is gone;
        then finish the session and wait out the lingering close (TCP closes when the
        caller returns). One coroutine frame for a held connection's whole life."""
        try:
            gateway = session._gateway
            table, connection_id = gateway.table, session.connection_id
            while True:
                events = self._events
                if not events:
                    if self._eof or self._closing:
                        return
                    if self._paused:
                        self._paused = False
                        self._wire.resume_reading()
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                    continue
                self._events, self._queued = [], 0
                for opcode, data in events:
                    if opcode == ws_frames.OP_TEXT or opcode == ws_frames.OP_BINARY:
                        table.activity(connection_id)
                        if not await session.from_client(data, opcode == ws_frames.OP_BINARY):
                            return
                    elif opcode == ws_frames.OP_CLOSE:
                        self._answer_close(data)
                        return
                    elif opcode != FAILED:  # a ping or a pong, or what _control_now left
                        if not await self._control(session, opcode, data):
                            return
                    else:  # FAILED: the client broke the protocol
                        assert self._reader.failure is not None
                        await self.close(*self._reader.failure)
                        return
        finally:
            if session.close_code is None:
                session.close_code = self.close_code or CloseCode.ABNORMAL
            session.finish()
            if self._linger is not None:
                await self._linger.done

    async def _control(self, session: ClientSession, opcode: int, data: bytes) -> bool:
        """A control event for the read loop: a ping or a pong read before the session
        opened (handled now as :meth:`_control_now` handles the others), or what
        :meth:`_control_now` left; False once the session is closing for it."""
        if opcode == ws_frames.OP_PING or opcode == ws_frames.OP_PONG:
            left = self._control_now(session, opcode, data)
            if left is None:
                return True
            opcode, data = left
        if opcode == _PONG_DUE:
            if not self._closing and not self._transport.is_closing():
                pending = self._write_whole(ws_frames.server_frame(ws_frames.OP_PONG, data))
                if pending is not None:
                    await pending
            return True
        closing = session.core.closing  # _CLOSE_DUE: the limit closes the session
        assert closing is not None
        await session.close(*closing)
        return False

    def _answer_close(self, payload: bytes) -> None:
        """The client's close: answered with its code (RFC 6455 section 5.5.1), then TCP is
        closed (the server closes first, section 7.1.1)."""
        code, _ = close_payload(payload)
        if self.close_code is None:
            self.close_code = code
        if not self._closing:
            self._send_close(ws_frames.close_frame(code, "") if payload else ws_frames.CLOSE_EMPTY)
        self._transport.close()


async def serve_upgrade(
    gateway: Gateway,
    head: RequestHead,
    transport: asyncio.Transport,
    wire: Wire,
    refuse: Callable[[bytes], None],
) -> None:
    """An upgrade whose head the public port read: the handshake, then the connection's
    read loop, and TCP closed at the end; or a refusal, whose whole answer ``refuse``
    writes (the port then closes lingering)."""
    try:
        with tracing.handshake(head.headers, TRANSPORT):  # nothing when tracing is off
            accepted = await _accept(gateway, head, transport, wire)
        del head  # (this frame lives as long as the connection)
        if isinstance(accepted, Refusal):
            refuse(http_answer(*accepted.answer()))
            return
        connection, session = accepted
        del accepted
        await connection.serve(session)
    except ConnectionResetError:
        pass  # the client left during the handshake
    except Exception:  # a bug: logged, the connection closed (aiohttp does the same)
        log.exception("websocket_failed")
    transport.close()


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    """An upgrade on a connection aiohttp serves (it carried other requests first)."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left before its upgrade was read")
    gateway = request.app[GATEWAY_KEY]
    with tracing.handshake(request.headers, TRANSPORT):
        accepted = await _accept(gateway, head_of(request), transport, AiohttpWire(request))
    if isinstance(accepted, Refusal):
        return accepted.response()
    connection, session = accepted
    del accepted
    await connection.serve(session)
    return SwitchedProtocols()


class SwitchedProtocols(web.StreamResponse):
    """What the handler of an upgraded connection returns once it is over: the 101 went
    out with the frame layer's first write, so aiohttp has nothing left to write."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def _accept(
    gateway: Gateway, head: RequestHead, transport: asyncio.Transport, wire: Wire
) -> Refusal | tuple[WebSocketConnection, ClientSession]:
    """The handshake: a refusal, or the connection and its session. Its own frame, so that
    an idle connection keeps none of what the handshake needed (token claims, offers)."""
    started = time.perf_counter()
    headers = head.headers
    try:
        accept = accept_key(headers, head.version)
    except NotAnUpgrade as unfit:
        gateway.metrics.handshakes[unfit.reason] += 1
        tracing.annotate(outcome=unfit.reason)
        refusal = Refusal(unfit.status, unfit.reason, unfit.message)
        if unfit.status == 426:
            refusal.headers = {"Sec-WebSocket-Version": VERSION}
        return refusal
    try:
        with tracing.span(tracing.ADMISSION_SPAN):
            admission = await gateway.gatekeeper.admit(head, TRANSPORT)
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        tracing.annotate(outcome=refusal.reason)
        return refusal
    settings = gateway.settings
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    v1 = envelope.PROTOCOL in offered or admission.query.get("protocol") == "v1"
    subprotocol = envelope.PROTOCOL if envelope.PROTOCOL in offered else admission.subprotocol
    start = await start_session(gateway, headers, admission, v1)
    terms = agree(headers.get("Sec-WebSocket-Extensions", "")) if settings.compression else None
    answer: dict[str, str] = {}
    if subprotocol:
        answer["Sec-WebSocket-Protocol"] = subprotocol
    if terms is not None:
        answer["Sec-WebSocket-Extensions"] = terms.header()
    if not v1:  # a v1 session learns its pod from the welcome: Envoy would hold the header
        answer[POD_HEADER] = settings.pod_id  # for the connection's life (≈ 0.3 KB)
    if transport.is_closing():
        gateway.sessions.remove(admission.connection_id)
        raise ConnectionResetError("the client left during the handshake")
    deflate = None if terms is None else Deflate(terms)
    connection = WebSocketConnection(settings.max_message_bytes, transport, wire, deflate)
    connection.start(switching_protocols(accept, answer), hold=v1)
    gateway.metrics.handshakes["accepted"] += 1
    session = await open_session(gateway, admission, connection, TRANSPORT, start)
    connection.open(session)
    note_edge(gateway.table, session.connection_id, headers)
    gateway.metrics.observe_handshake(TRANSPORT, time.perf_counter() - started)  # 101 out
    tracing.annotate(
        outcome="accepted", connection_id=session.connection_id, session_id=session.session_id
    )
    return connection, session


class _Linger:
    """The shell of a :class:`LingeringClose`: its deadline is a timer, its decision to
    close TCP a ``transport.close()``; ``done`` resolves when TCP is closed, and ``wake``
    (the read loop's) is called then."""

    __slots__ = ("_core", "_timer", "_transport", "_wake", "done")

    def __init__(self, transport: asyncio.Transport, wake: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._transport = transport
        self._wake = wake
        self._core = LingeringClose(loop.time())
        self._timer = loop.call_at(self._core.deadline, self._deadline)
        self.done: asyncio.Future[None] = loop.create_future()

    def received(self, size: int, close_received: bool) -> None:
        now = asyncio.get_running_loop().time()
        if self._core.received(size, close_received, now) is LingerVerdict.CLOSE:
            self.finish()

    def _deadline(self) -> None:
        """The bound passed. A client that has not even read what was written to it (the
        close frame among it) by now never will: a graceful close would wait for it to
        read, holding the session until the heartbeats found it dead; it is reset."""
        if self._transport.get_write_buffer_size() > 0:
            self._transport.abort()
        self.finish()

    def finish(self) -> None:
        """Close TCP (at once if the client's close came, or at a bound: the latter may
        reset a client that is still sending, which is then past every bound)."""
        if self.done.done():
            return
        self._timer.cancel()
        self.done.set_result(None)
        self._transport.close()
        self._wake()
