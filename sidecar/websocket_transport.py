"""``/ws``: the WebSocket transport, aiohttp glue around the gateway's rules.

Reading: every frame is liveness; pongs feed the heartbeat schedule; messages
pass the per-connection limits, then go to the backend (awaiting its stream:
a full backend stream pauses reading from this client). Writing: backend
messages enter the bounded :class:`~sidecar.core.SendQueue`; one writer
task per connection, alive only while there is something to send, drains it;
a client that reads too slowly is cut with 1013.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from aiohttp import WSMsgType, web

from sidecar.backend_bridge import BackendLink, SessionInfo
from sidecar.core import (
    CloseCode,
    InboundVerdict,
    Outgoing,
    PushResult,
    SendQueue,
)
from sidecar.gateway import GATEWAY_KEY, Admission, Gateway, Refusal

log = structlog.get_logger()

POD_HEADER = "x-wsfleet-pod"  # on every accepted handshake: which pod holds the connection
CLOSE_TIMEOUT_S = 2.0
PING_FRAME = b"\x89\x00"  # FIN + opcode 0x9 (ping), unmasked, empty payload
PING_SKIP_BUFFER_BYTES = 64 * 1024
_RATE_NOTICE = json.dumps({"type": "notice", "reason": "rate_limited"}).encode()


class WebSocketConnection:
    """One client WebSocket; receives backend events as a ``SessionSink``."""

    transport = "websocket"
    __slots__ = (
        "_closing",
        "_gateway",
        "_limits",
        "_queue",
        "_request",
        "_writer",
        "_ws",
        "close_code",
        "link",
        "session_id",
        "user_id",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        admission: Admission,
        gateway: Gateway,
    ) -> None:
        self.session_id = admission.session_id
        self.user_id = admission.identity.user_id
        self.link: BackendLink = admission.link
        self._ws = ws
        self._request = request
        self._gateway = gateway
        self._queue: SendQueue | None = None  # created with the first outbound message
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._limits = gateway.new_limits()
        self.close_code: int | None = None

    # -- backend -> client --------------------------------------------------

    def deliver(self, data: bytes, binary: bool, droppable: bool, coalesce_key: str) -> None:
        if self.close_code is not None:
            return
        settings = self._gateway.settings
        if self._queue is None:
            self._queue = SendQueue(
                settings.send_queue_messages,
                settings.send_queue_bytes,
                settings.slow_consumer_grace_s,
            )
        now = asyncio.get_running_loop().time()
        result = self._queue.push(Outgoing(data, binary, droppable, coalesce_key or None), now)
        if result is PushResult.DROPPED or result is PushResult.SHED_OLDER:
            self._gateway.metrics.drops.labels("shed").inc()
        elif result is PushResult.COALESCED:
            self._gateway.metrics.drops.labels("coalesced").inc()
        verdict = self._queue.verdict(now)
        if verdict is not None:
            self._cut(verdict, "slow consumer")
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        queue = self._queue
        assert queue is not None
        metrics = self._gateway.metrics
        grace = self._gateway.settings.slow_consumer_grace_s
        while (message := queue.pop()) is not None and not self._ws.closed:
            send = (
                self._ws.send_bytes(message.data)
                if message.binary
                else self._ws.send_str(message.data.decode("utf-8", errors="replace"))
            )
            try:
                await asyncio.wait_for(send, grace)
            except TimeoutError:
                self._cut(CloseCode.TRY_AGAIN_LATER, "slow consumer")
                return
            except ConnectionError:
                return
            metrics.messages_out.inc()
            metrics.bytes_out.inc(len(message.data))

    def queued(self) -> tuple[int, int]:
        return (len(self._queue), self._queue.bytes_queued) if self._queue else (0, 0)

    def close_requested(self, code: int, reason: str) -> None:
        self._cut(code, reason)

    def rebind(self, link: BackendLink) -> None:
        self.link = link

    # -- liveness -------------------------------------------------------------

    def send_ping(self) -> None:
        """Write an empty ping frame straight to the socket: no task, no await.

        A server's frames are unmasked, and a transport write is whole, so this never
        interleaves with aiohttp's own frames. A socket whose write buffer is already
        full is not pinged: it is not reading, and will be found dead if it never answers.
        """
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() < PING_SKIP_BUFFER_BYTES:
            transport.write(PING_FRAME)

    # -- closing ----------------------------------------------------------------

    def _cut(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        try:
            await asyncio.wait_for(
                self._ws.close(code=code, message=reason.encode()[:123]), CLOSE_TIMEOUT_S
            )
        except (TimeoutError, ConnectionError):
            self.abort()

    def abort(self) -> None:
        """Drop the socket at once (a dead or stuck peer cannot take a close frame)."""
        if self.close_code is None:
            self.close_code = 1006
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    # -- client -> backend --------------------------------------------------------

    async def receive(self) -> None:
        gateway = self._gateway
        metrics = gateway.metrics
        loop = asyncio.get_running_loop()
        async for message in self._ws:
            if message.type is WSMsgType.PONG:
                gateway.pong(self.session_id)
                continue
            gateway.activity(self.session_id)
            if message.type is WSMsgType.PING:
                await self._ws.pong(message.data)
                continue
            if message.type is WSMsgType.TEXT:
                data, binary = message.data.encode(), False
            elif message.type is WSMsgType.BINARY:
                data, binary = message.data, True
            else:
                break
            metrics.messages_in.inc()
            metrics.bytes_in.inc(len(data))
            if self._limits is not None:
                verdict = self._limits.check(len(data), loop.time())
                if verdict is InboundVerdict.CLOSE:
                    metrics.rate_limited.labels("close").inc()
                    await self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                    break
                if verdict is InboundVerdict.DROP:
                    metrics.rate_limited.labels("drop").inc()
                    self.deliver(_RATE_NOTICE, False, True, "notice:rate_limited")
                    continue
            await self.link.send(self.session_id, data, binary)


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    try:
        admission = await gateway.admit(request, WebSocketConnection.transport)
    except Refusal as refusal:
        gateway.metrics.handshakes.labels(refusal.reason).inc()
        return refusal.response()
    settings = gateway.settings
    ws = web.WebSocketResponse(
        protocols=(admission.subprotocol,) if admission.subprotocol else (),
        max_msg_size=settings.max_message_bytes,
        autoping=False,  # pongs feed the heartbeat schedule
        compress=settings.compression,
    )
    ws.headers[POD_HEADER] = settings.pod_id
    try:
        await ws.prepare(request)
    except (ConnectionError, web.HTTPException):
        await gateway.sessions.remove(admission.session_id)
        raise
    gateway.metrics.handshakes.labels("accepted").inc()
    connection = WebSocketConnection(ws, request, admission, gateway)
    connection.link.open(
        SessionInfo(
            session_id=admission.session_id,
            user_id=connection.user_id,
            routing_key=admission.routing_key,
            transport=connection.transport,
            pod_id=settings.pod_id,
        ),
        connection,
    )
    del admission  # an idle connection keeps only what it needs (not the token's claims)
    gateway.track(connection)
    try:
        await connection.receive()
    finally:
        code = connection.close_code or ws.close_code or 1006
        connection.link.close(connection.session_id, code, "client closed")
        await gateway.untrack(connection, code)
        log.debug(
            "connection_closed",
            connection_id=connection.session_id,
            user_id=connection.user_id,
            code=code,
        )
    return ws
