"""WebSocket backends: one upstream WebSocket per session.

For backends that already speak WebSocket (``--backend ws://host:port/path``).
The session's identity goes in the query string (``session_id``, ``user_id``,
``routing_key``, ``transport``, ``pod_id``); messages are relayed both ways as
they are; the backend closing its socket closes the client with the same code.
Cheaper per session than nothing, dearer than the multiplexed gRPC bridge:
prefer gRPC for large fleets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import aiohttp
import structlog

from sidecar.backend_bridge import BackendLink, LostSessions, SessionInfo, SessionSink
from sidecar.core.channel_frames import ChannelRequest
from sidecar.core.close_codes import CloseCode
from wsfleet.cancelling import cancel_and_wait

log = structlog.get_logger()

PROBE_INTERVAL_S = 1.0


class _Upstream:
    __slots__ = ("info", "outbox", "sink", "task")

    def __init__(self, info: SessionInfo, sink: SessionSink) -> None:
        self.info = info
        self.sink = sink
        self.outbox: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue(1000)
        self.task: asyncio.Task[None] | None = None


class WebSocketBackendLink:
    """A WebSocket backend, considered up while its port accepts connections."""

    def __init__(self, url: str) -> None:
        self.address = url
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "wss" else 80)
        self._sessions: dict[str, _Upstream] = {}
        self._up = False
        self._probe: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._on_lost: Callable[[BackendLink, LostSessions], None] = lambda link, lost: None

    @property
    def is_up(self) -> bool:
        return self._up

    def start(self, on_lost: Callable[[BackendLink, LostSessions], None]) -> None:
        self._on_lost = on_lost
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._probe = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        await cancel_and_wait(self._probe)
        for upstream in list(self._sessions.values()):
            if upstream.task is not None:
                upstream.task.cancel()
        if self._http is not None:
            await self._http.close()

    async def _watch(self) -> None:
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), PROBE_INTERVAL_S
                )
                writer.close()
                self._up = True
            except (OSError, TimeoutError):
                if self._up:
                    log.warning("backend_link_down", backend=self.address)
                self._up = False
            await asyncio.sleep(PROBE_INTERVAL_S)

    def open(self, sink: SessionSink, resumed: bool = False, last_message_id: int = 0) -> None:
        info = sink.session_info()
        upstream = _Upstream(info, sink)
        self._sessions[info.session_id] = upstream
        upstream.task = asyncio.create_task(self._relay(upstream))

    def persisted(self, session_id: str, message_id: int) -> None:
        """WebSocket backends have no acknowledgements."""

    async def send(self, session_id: str, data: bytes, binary: bool, seq: int = 0) -> None:
        upstream = self._sessions.get(session_id)
        if upstream is not None:
            await upstream.outbox.put((data, binary))

    def ask_publication(self, session_id: str, user_id: str, request: ChannelRequest) -> bool:
        return False  # a WebSocket backend has no way to answer: such publications are refused

    def close(self, session_id: str, code: int, reason: str) -> None:
        upstream = self._sessions.pop(session_id, None)
        if upstream is not None:
            with contextlib.suppress(asyncio.QueueFull):
                upstream.outbox.put_nowait(None)

    async def _relay(self, upstream: _Upstream) -> None:
        info = upstream.info
        query = urlencode(
            {
                "session_id": info.session_id,
                "user_id": info.user_id,
                "routing_key": info.routing_key,
                "transport": info.transport,
                "pod_id": info.pod_id,
            }
        )
        separator = "&" if "?" in self.address else "?"
        assert self._http is not None
        try:
            async with self._http.ws_connect(f"{self.address}{separator}{query}") as ws:
                writer = asyncio.create_task(self._forward(upstream, ws))
                try:
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            upstream.sink.deliver(message.data.encode(), False, False, "", 0)
                        elif message.type is aiohttp.WSMsgType.BINARY:
                            upstream.sink.deliver(message.data, True, False, "", 0)
                finally:
                    writer.cancel()
                if self._sessions.pop(info.session_id, None) is not None:
                    code = ws.close_code or CloseCode.NORMAL
                    upstream.sink.close_requested(code, "backend closed")
        except (aiohttp.ClientError, OSError) as exc:
            if self._sessions.pop(info.session_id, None) is not None:
                log.warning(
                    "backend_session_failed",
                    backend=self.address,
                    session_id=info.session_id,
                    error=str(exc),
                )
                self._on_lost(self, [upstream.sink])

    @staticmethod
    async def _forward(upstream: _Upstream, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (item := await upstream.outbox.get()) is not None:
            data, binary = item
            if binary:
                await ws.send_bytes(data)
            else:
                await ws.send_str(data.decode("utf-8", errors="replace"))
        await ws.close()
