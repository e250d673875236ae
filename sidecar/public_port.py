"""The public port's own protocol: it reads the start of each new connection. A ``GET /ws``
is served here — the request head read and checked (:mod:`sidecar.core.http_head`), the
handshake and the frame layer run (:func:`sidecar.websocket_transport.serve_upgrade`) — so
that a held WebSocket costs its socket, its session and its frame reader, not an HTTP
server's request, handler and task as well. Every other request is handed, with the bytes
read so far, to aiohttp, which serves the connection from then on (SSE, long-poll, health).

A connection that sends no whole head within the idle deadline is closed, as aiohttp closes
one that sends no request; a head past its bounds gets a 4xx answer and the close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from sidecar.admission import Refusal
from sidecar.core.http_head import Route, head_end, http_answer, parse_head, route
from sidecar.core.ws_handshake import NotAnUpgrade
from sidecar.gateway import Gateway
from sidecar.websocket_transport import WebSocketConnection, serve_upgrade

REFUSED_LINGER_S = 2.0  # after a refusal, what the client still sends is read and dropped


class PublicPort(asyncio.Protocol):
    """One connection to the public port, up to its handover (to aiohttp), or as the
    :class:`~sidecar.websocket_transport.Wire` of the WebSocket it became."""

    __slots__ = (
        "_aiohttp",
        "_buffer",
        "_connection",
        "_drained",
        "_gateway",
        "_handshake",
        "_idle_timeout_s",
        "_refused",
        "_scanned",
        "_timer",
        "_transport",
        "_writing_paused",
    )

    def __init__(
        self,
        gateway: Gateway,
        idle_timeout_s: float,
        aiohttp: Callable[[], asyncio.Protocol],
    ) -> None:
        self._gateway = gateway
        self._idle_timeout_s = idle_timeout_s
        self._aiohttp = aiohttp  # makes aiohttp's protocol for a connection handed over
        self._buffer = b""  # the head so far; after it, what came before the upgrade was done
        self._scanned = 0  # bytes of the buffer searched for the head's end
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._connection: WebSocketConnection | None = None
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP socket's (uvloop's too)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._idle_timeout_s, self._transport.close)

    def data_received(self, data: bytes) -> None:
        connection = self._connection
        if connection is not None:
            connection.feed_data(data)
            return
        if self._refused:
            return  # read to the client's end (or the bound), so that the answer is not reset
        buffer = self._buffer + data if self._buffer else data
        if self._handshake is not None:  # read with the head, before reading paused
            self._buffer = buffer
            return
        served_by = route(buffer)
        if served_by is Route.AIOHTTP:
            self._hand_over(buffer)
            return
        try:
            end = -1 if served_by is None else head_end(buffer, self._scanned)
        except NotAnUpgrade as bad:
            self._refuse(bad)
            return
        if end < 0:
            self._buffer, self._scanned = buffer, max(0, len(buffer) - 3)
            return
        try:
            head = parse_head(buffer[:end])
        except NotAnUpgrade as bad:
            self._refuse(bad)
            return
        self._stop_timer()
        self._buffer = buffer[end:]
        transport = self._transport
        assert transport is not None
        transport.pause_reading()  # until the connection takes its bytes
        self._handshake = asyncio.ensure_future(
            serve_upgrade(self._gateway, head, transport, self, self.refuse)
        )

    def _hand_over(self, buffer: bytes) -> None:
        """aiohttp serves this connection from now on, starting with ``buffer``."""
        self._stop_timer()
        transport = self._transport
        assert transport is not None
        protocol = self._aiohttp()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buffer)
        self._transport, self._buffer = None, b""

    def _refuse(self, bad: NotAnUpgrade) -> None:
        self._gateway.metrics.handshakes[bad.reason] += 1
        self.refuse(http_answer(*Refusal(bad.status, bad.reason, bad.message).answer()))

    def refuse(self, answer: bytes) -> None:
        """Write a refusal's whole ``answer``, then close lingering: the client's end (or
        :data:`REFUSED_LINGER_S`) closes the socket, and what it sends meanwhile is read
        and dropped, so that it does not reset the answer."""
        self._stop_timer()
        transport = self._transport
        assert transport is not None
        if transport.is_closing():
            return
        transport.write(answer)
        transport.write_eof()
        self._refused, self._buffer = True, b""
        transport.resume_reading()  # (paused while the handshake ran)
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost tells the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._connection is not None:
            self._connection.feed_eof()
        self._wake_drain()

    # -- the wire of the WebSocket it became

    def attach(self, connection: WebSocketConnection) -> None:
        self._connection = connection
        transport = self._transport
        assert transport is not None
        if not transport.is_closing():
            transport.resume_reading()
        early, self._buffer = self._buffer, b""
        if early:  # frames sent with the head: read first
            connection.feed_data(early)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain()

    def drain(self) -> asyncio.Future[None]:
        drained = self._drained
        if drained is None:
            drained = asyncio.get_running_loop().create_future()
            transport = self._transport
            if not self._writing_paused or transport is None or transport.is_closing():
                drained.set_result(None)  # (a closed socket: the next write raises)
            else:
                self._drained = drained
        return drained

    def _wake_drain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
