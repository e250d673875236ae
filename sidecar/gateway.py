"""The gateway: every client connection of this pod, and the rules at the door."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from sidecar.auth import AuthError, Identity, TokenVerifier, find_token
from sidecar.backend_bridge import BackendBridge, BackendLink
from sidecar.metrics import GatewayMetrics
from wsfleet.settings import SidecarSettings


class Refusal(Exception):
    """A handshake refused before any upgrade: HTTP status + short JSON body."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None
        return web.json_response(
            {"error": self.reason, "message": self.message}, status=self.status, headers=headers
        )


class Connection:
    """What the gateway tracks of any client connection, whatever its transport."""

    session_id: str
    user_id: str
    transport: str

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake that passed: who, and which backend link serves them."""

    identity: Identity
    session_id: str
    routing_key: str
    link: BackendLink
    subprotocol: str | None


@dataclass
class Gateway:
    """Shared state of one sidecar; transports call :meth:`admit` and :meth:`track`."""

    settings: SidecarSettings
    verifier: TokenVerifier
    bridge: BackendBridge
    metrics: GatewayMetrics
    draining: bool = False
    connections: dict[str, Connection] = field(default_factory=dict)

    def admit(self, request: web.Request) -> Admission:
        """Check a handshake; raise :class:`Refusal` with the reason if refused."""
        try:
            token, subprotocol = find_token(request.headers, request.query)
            identity = self.verifier.verify(token)
        except AuthError as exc:
            raise Refusal(exc.status, exc.reason, exc.message) from None
        hashed_user = request.headers.get(self.settings.user_header) or request.query.get(
            self.settings.user_query_parameter
        )
        if hashed_user != identity.user_id:
            raise Refusal(
                403,
                "user_mismatch",
                f"the routing user (?{self.settings.user_query_parameter}= or "
                f"{self.settings.user_header}) must equal the token subject",
            )
        if self.draining:
            raise Refusal(503, "draining", "this gateway is draining", retry_after_s=1)
        routing_key = identity.user_id
        link = self.bridge.link_for(routing_key)
        if link is None:
            raise Refusal(503, "no_backend", "no backend is available", retry_after_s=2)
        return Admission(identity, uuid.uuid4().hex, routing_key, link, subprotocol)

    def track(self, connection: Connection) -> None:
        self.connections[connection.session_id] = connection
        self.metrics.connections.labels(connection.transport).inc()

    def untrack(self, connection: Connection, code: int) -> None:
        if self.connections.pop(connection.session_id, None) is not None:
            self.metrics.connections.labels(connection.transport).dec()
            self.metrics.closes.labels(str(code)).inc()

    async def close_all(self, code: int, reason: str, timeout_s: float) -> None:
        """Close every connection (pod shutdown); give up waiting after ``timeout_s``."""
        closing = [connection.close(code, reason) for connection in list(self.connections.values())]
        if closing:
            await asyncio.wait(
                [asyncio.ensure_future(close) for close in closing], timeout=timeout_s
            )


GATEWAY_KEY = web.AppKey("gateway", Gateway)
