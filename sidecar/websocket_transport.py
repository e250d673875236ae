"""``/ws``: the WebSocket transport (aiohttp glue around the gateway's rules)."""

from __future__ import annotations

import asyncio
import collections

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from sidecar.backend_bridge import SessionInfo
from sidecar.gateway import GATEWAY_KEY, Admission, Connection, Gateway, Refusal

log = structlog.get_logger()

POD_HEADER = "x-wsfleet-pod"  # on every accepted handshake: which pod holds the connection


class WebSocketConnection(Connection):
    """One client WebSocket; receives backend events as a :class:`SessionSink`."""

    transport = "websocket"

    def __init__(self, ws: web.WebSocketResponse, admission: Admission, gateway: Gateway):
        self.session_id = admission.session_id
        self.user_id = admission.identity.user_id
        self._ws = ws
        self._gateway = gateway
        self._outbox: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.close_code: int | None = None

    def deliver(self, data: bytes, binary: bool, droppable: bool) -> None:
        self._outbox.append((data, binary))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        metrics = self._gateway.metrics
        while self._outbox and not self._ws.closed:
            data, binary = self._outbox.popleft()
            if binary:
                await self._ws.send_bytes(data)
            else:
                await self._ws.send_str(data.decode("utf-8", errors="replace"))
            metrics.messages_out.inc()
            metrics.bytes_out.inc(len(data))

    def close_requested(self, code: int, reason: str) -> None:
        self._closing = asyncio.ensure_future(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        await self._ws.close(code=code, message=reason.encode()[:123])


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    try:
        admission = gateway.admit(request)
    except Refusal as refusal:
        gateway.metrics.handshakes.labels(refusal.reason).inc()
        return refusal.response()
    settings = gateway.settings
    ws = web.WebSocketResponse(
        protocols=(admission.subprotocol,) if admission.subprotocol else (),
        max_msg_size=settings.max_message_bytes,
        heartbeat=settings.heartbeat_interval_s,
        autoping=True,
    )
    ws.headers[POD_HEADER] = settings.pod_id
    await ws.prepare(request)
    gateway.metrics.handshakes.labels("accepted").inc()
    connection = WebSocketConnection(ws, admission, gateway)
    bound = log.bind(connection_id=admission.session_id, user_id=connection.user_id)
    link = admission.link
    link.open(
        SessionInfo(
            session_id=admission.session_id,
            user_id=connection.user_id,
            routing_key=admission.routing_key,
            transport=connection.transport,
            pod_id=settings.pod_id,
        ),
        connection,
    )
    gateway.track(connection)
    bound.debug("connection_opened", backend=link.address)
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                data = message.data.encode()
                binary = False
            elif message.type is WSMsgType.BINARY:
                data = message.data
                binary = True
            else:
                break
            gateway.metrics.messages_in.inc()
            gateway.metrics.bytes_in.inc(len(data))
            await link.send(admission.session_id, data, binary)
    finally:
        code = connection.close_code or ws.close_code or WSCloseCode.ABNORMAL_CLOSURE
        link.close(admission.session_id, code, "client closed")
        gateway.untrack(connection, code)
        bound.debug("connection_closed", code=code)
    return ws
