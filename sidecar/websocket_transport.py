"""``/ws``: the WebSocket transport.

Raw clients send and receive bare messages. Clients that offer the
``wsfleet.v1`` subprotocol (or ask ``?protocol=v1``) speak protocol v1: JSON
envelopes with sequence numbers, and resume with ``?session=&last_seq=``.
Every frame from the client is liveness; pongs feed the heartbeat schedule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from sidecar.admission import Refusal
from sidecar.client_session import ClientSession, open_session, start_session
from sidecar.core import CloseCode, envelope, fit_reason, ws_frames
from sidecar.core.lingering_close import LingeringClose, LingerVerdict
from sidecar.edge_drain import note_edge
from sidecar.gateway import GATEWAY_KEY
from wsfleet import tracing
from wsfleet.headers import POD_HEADER

log = structlog.get_logger()

PING_SKIP_BUFFER_BYTES = 64 * 1024
WRITE_HIGH_WATER_BYTES = 64 * 1024  # beyond this in the socket's buffer, wait for it to drain
TRANSPORT = "websocket"
# aiohttp's close waits this long for the client's close frame: the lingering close waits
# for it instead, after the close returns (and the handler, before it returns)
AIOHTTP_CLOSE_WAIT_S = 0.001


class TurnWrites:
    """The WebSocket frames of one turn of the event loop, written at its end: one write
    per socket per turn, however many frames it got meanwhile (a fan-out of several
    publications, a bridge batch with several messages for one session). Envoy then reads
    them in one go too."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[WebSocketChannel] = []
        self._scheduled = False

    def add(self, channel: WebSocketChannel) -> None:
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


class WebSocketChannel:
    """Frames go to the socket whole (see :mod:`sidecar.core.ws_frames`), gathered into one
    write per turn of the event loop (:class:`TurnWrites`); with permessage-deflate on,
    through aiohttp. What aiohttp writes itself (a close) waits for what is gathered."""

    __slots__ = ("_compress", "_pending", "_pending_bytes", "_request", "_upgrade", "_ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        compress: bool,
        upgrade: AbstractStreamWriter | None = None,
    ) -> None:
        self._ws = ws
        self._request = request
        self._compress = compress
        self._upgrade = upgrade  # the 101 not sent yet: it leaves with the first frame
        self._pending: list[bytes] | None = None  # frames of this turn, not written yet
        self._pending_bytes = 0

    @property
    def takes_wire(self) -> bool:
        return not self._compress

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        if wire is not None and not self._compress:  # made once for many sockets
            return self._write_whole(wire)
        if binary:
            opcode = ws_frames.OP_BINARY
        else:
            opcode = ws_frames.OP_TEXT
            if not frame.isascii():  # a text frame must be UTF-8: invalid bytes become U+FFFD
                frame = ws_frames.valid_utf8(frame)
        if self._compress:
            return self._ws.send_frame(frame, WSMsgType(opcode))
        return self._write_whole(ws_frames.server_frame(opcode, frame))

    def _write_whole(self, whole: bytes) -> Awaitable[None] | None:
        """One whole frame for the socket, written with the others of this turn."""
        if self._upgrade is not None:
            upgrade, self._upgrade = self._upgrade, None
            return upgrade.write(whole)  # the 101 + this frame
        transport = self._request.transport
        if transport is None or transport.is_closing() or self._ws.closed:
            raise ConnectionResetError("the client is gone")
        pending = self._pending
        if pending is None:
            self._pending = [whole]
            TURN_WRITES.add(self)
        else:
            pending.append(whole)
        self._pending_bytes += len(whole)
        if self._pending_bytes + transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            self.flush()
            return self._request.writer.drain()
        return None

    def flush(self) -> None:
        """Write the frames gathered this turn, in one transport write."""
        pending = self._pending
        if pending is None:
            return
        self._pending, self._pending_bytes = None, 0
        transport = self._request.transport
        # after a close frame (aiohttp's own, answering the client's) no data may follow
        if transport is not None and not transport.is_closing() and not self._ws.closed:
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def close(self, code: int, reason: str) -> None:
        self.flush()  # the close frame comes after every frame written before it
        await self._ws.close(code=code, message=fit_reason(reason).encode())

    def abort(self) -> None:
        self._pending, self._pending_bytes = None, 0
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    def idle_for(self, now: float) -> float:
        return 0.0

    def ping(self) -> None:
        """Write an empty ping frame straight to the socket: no task, no await.

        A socket whose write buffer is full is not pinged: it is not reading, and will be
        found dead if it never answers.
        """
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() < PING_SKIP_BUFFER_BYTES:
            transport.write(ws_frames.PING)


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    """The handshake, then the connection's read loop (in this one frame: a held
    connection keeps one coroutine frame, not two)."""
    with tracing.handshake(request.headers, TRANSPORT):  # nothing when tracing is off
        accepted = await _accept(request)
    if isinstance(accepted, web.Response):
        return accepted
    ws, session = accepted
    del accepted  # the tuple would live as long as the connection
    gateway = session._gateway
    connection_id = session.connection_id
    try:
        async for message in ws:
            if message.type is WSMsgType.PING or message.type is WSMsgType.PONG:
                # counted like data frames (one bucket): a ping costs a pong write
                if not session.core.control_frame(len(message.data), session.now()):
                    closing = session.core.closing
                    if closing is None:
                        continue  # over the limit, rate_limit_action=drop: not answered
                    await session.close(*closing)
                    break
                if message.type is WSMsgType.PONG:
                    gateway.table.pong(connection_id)
                else:
                    gateway.table.activity(connection_id)
                    await ws.pong(message.data)
                continue
            gateway.table.activity(connection_id)
            if message.type is WSMsgType.TEXT:
                data, binary = message.data.encode(), False
            elif message.type is WSMsgType.BINARY:
                data, binary = message.data, True
            else:
                break
            if not await session.from_client(data, binary):
                break
    finally:
        if session.close_code is None:
            session.close_code = ws.close_code or CloseCode.ABNORMAL
        session.finish()
        await ws.lingered()  # TCP closes when this handler returns
    return ws


async def _accept(
    request: web.Request,
) -> web.Response | tuple[_WebSocketResponse, ClientSession]:
    """The handshake: a refusal, or the socket and its session. Its own frame, so that an
    idle connection keeps none of what the handshake needed (token claims, offers)."""
    gateway = request.app[GATEWAY_KEY]
    started = time.perf_counter()
    unfit = _not_rfc6455(request)
    if unfit is not None:
        gateway.metrics.handshakes[unfit.reason] += 1
        tracing.annotate(outcome=unfit.reason)
        return unfit.response()
    try:
        with tracing.span(tracing.ADMISSION_SPAN):
            admission = await gateway.gatekeeper.admit(request, TRANSPORT)
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        tracing.annotate(outcome=refusal.reason)
        return refusal.response()
    settings = gateway.settings
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    v1 = envelope.PROTOCOL in offered or admission.query.get("protocol") == "v1"
    subprotocol = envelope.PROTOCOL if envelope.PROTOCOL in offered else admission.subprotocol
    start = await start_session(gateway, request, admission, v1)
    ws = _WebSocketResponse(
        protocols=(subprotocol,) if subprotocol else (),
        max_msg_size=settings.max_message_bytes,
        autoping=False,  # pongs feed the heartbeat schedule
        compress=settings.compression,
        timeout=AIOHTTP_CLOSE_WAIT_S,
    )
    ws.headers[POD_HEADER] = settings.pod_id
    try:
        answer = await ws.prepare(request)  # the 101, held back (see _WebSocketResponse)
    except (ConnectionError, web.HTTPException):
        gateway.sessions.remove(admission.connection_id)
        raise
    ws.gate = _refuse_unmasked_frames(request, ws)
    gateway.metrics.handshakes["accepted"] += 1
    compress = bool(ws.compress)  # as negotiated
    if not v1 or compress:  # no welcome to send with it, or frames written by aiohttp
        answer.send_headers()
    channel = WebSocketChannel(ws, request, compress, None if compress or not v1 else answer)
    session = await open_session(gateway, admission, channel, TRANSPORT, start)
    note_edge(gateway.table, session.connection_id, request)
    gateway.metrics.observe_handshake(TRANSPORT, time.perf_counter() - started)  # 101 out
    tracing.annotate(
        outcome="accepted", connection_id=session.connection_id, session_id=session.session_id
    )
    return ws, session


class _WebSocketResponse(web.WebSocketResponse):
    """Holds the 101 back until the first frame, so that the upgrade answer and the v1
    welcome leave in one write (one segment, one read for Envoy). Every path that does
    not write the welcome sends the 101 at once (``send_headers``).

    Closes lingering (:mod:`sidecar.core.lingering_close`): once the gateway's close
    frame is on its way, what the client still sends is read and discarded until its
    close frame, and only then is TCP closed. Every close aiohttp makes comes here, the
    ones of its frame reader too (1009 for a message too big, 1002, 1007)."""

    __slots__ = ("gate",)
    _send_headers_immediately = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate: _MaskedFramesOnly | None = None  # the frame gate, once prepared

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        writer = await super().prepare(request)
        # The 101's headers are serialized by now: their dict would live as long as the
        # connection for nothing (≈ 0.4 KB per idle client, the accept key included).
        self._headers = CIMultiDict()
        return writer

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        gate = self.gate
        if gate is not None and not self.closed:
            gate.linger()  # before the close frame leaves: whatever follows it is discarded
        return await super().close(code=code, message=message, drain=drain)

    def _close_transport(self) -> None:
        """aiohttp closes TCP as soon as its close frame is written (or its reader failed):
        a lingering close closes it later, itself."""
        gate = self.gate
        if gate is None or not gate.lingering:
            super()._close_transport()

    async def lingered(self) -> None:
        """Until the lingering close (if any) has closed TCP: bounded by its deadline."""
        gate = self.gate
        if gate is not None:
            await gate.lingered()


class _MaskedFramesOnly(ws_frames.MaskCheck):
    """aiohttp's frame reader, behind a check of every client frame's mask bit (aiohttp
    does not check it): the first unmasked frame closes the connection with 1002. (One
    object with the check it runs: it lives as long as the connection.)

    Once the gateway closes (:meth:`linger`), nothing more reaches aiohttp's reader: what
    the client sends is read and discarded until its close frame (see
    :mod:`sidecar.core.lingering_close`)."""

    __slots__ = ("_closing", "_linger", "_reader", "_request", "_ws")

    def __init__(self, reader: Any, ws: web.WebSocketResponse, request: web.Request) -> None:
        super().__init__()
        self._reader = reader
        self._ws = ws
        self._request = request
        self._closing: asyncio.Future[bool] | None = None
        self._linger: _Linger | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        linger = self._linger
        if linger is not None:  # the gateway has closed: read, discard, wait for the close
            self.feed(data)
            linger.received(len(data), self.close_received)
            return False, b""
        if self.feed(data):
            result: tuple[bool, bytes] = self._reader.feed_data(data)
            return result
        if self._closing is None and not self._ws.closed:
            self._closing = asyncio.ensure_future(
                self._ws.close(code=CloseCode.PROTOCOL_ERROR, message=b"unmasked frame")
            )
        return False, b""  # nothing of it reaches the session

    def feed_eof(self) -> None:
        if self._linger is not None:
            self._linger.finish()
        self._reader.feed_eof()

    def linger(self) -> None:
        """The gateway's close frame is about to be written: from now on, read and discard
        until the client's close frame, EOF, the byte budget or the deadline. Not when the
        client's close frame is already in (the gateway answers it) or TCP is gone."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if self._linger is None and not self.close_received:
            self._linger = _Linger(transport)
            # aiohttp pauses reading while its message queue is full: nothing drains it now
            self._request.protocol.resume_reading()

    @property
    def lingering(self) -> bool:
        """A lingering close is under way (TCP not closed by it yet)."""
        return self._linger is not None and not self._linger.done.done()

    async def lingered(self) -> None:
        if self._linger is not None:
            await self._linger.done


class _Linger:
    """The shell of a :class:`LingeringClose`: its deadline is a timer, its decision to
    close TCP a ``transport.close()``; ``done`` resolves when TCP is closed."""

    __slots__ = ("_core", "_timer", "_transport", "done")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._transport = transport
        self._core = LingeringClose(loop.time())
        self._timer = loop.call_at(self._core.deadline, self.finish)
        self.done: asyncio.Future[None] = loop.create_future()

    def received(self, size: int, close_received: bool) -> None:
        now = asyncio.get_running_loop().time()
        if self._core.received(size, close_received, now) is LingerVerdict.CLOSE:
            self.finish()

    def finish(self) -> None:
        """Close TCP (at once if the client's close came, or at a bound: the latter may
        reset a client that is still sending, which is then past every bound)."""
        if self.done.done():
            return
        self._timer.cancel()
        self.done.set_result(None)
        self._transport.close()


def _refuse_unmasked_frames(request: web.Request, ws: web.WebSocketResponse) -> _MaskedFramesOnly:
    """Put the mask check in front of the frame reader that ``prepare`` installed."""
    protocol: Any = request.protocol
    gate = _MaskedFramesOnly(protocol._payload_parser, ws, request)
    protocol._payload_parser = gate
    return gate


def _not_rfc6455(request: web.Request) -> Refusal | None:
    """RFC 6455 section 4: an upgrade is an HTTP/1.1 (or later) GET for version 13; another
    version is answered 426 with the version this server speaks. (A request that asks for
    no upgrade is judged by the handshake's other checks.)"""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return None
    if request.version < (1, 1):
        return Refusal(400, "http_version", "a WebSocket upgrade needs HTTP/1.1")
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        refusal = Refusal(426, "websocket_version", "this server speaks WebSocket version 13")
        refusal.headers = {"Sec-WebSocket-Version": "13"}
        return refusal
    return None
