"""The gateway: every client connection of this pod, and the rules at the door."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookies
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import web

from sidecar.auth import AuthError, Identity, TokenVerifier, find_token
from sidecar.backend_bridge import BackendLink
from sidecar.backends import BackendBridge
from sidecar.core import HeartbeatPolicy, HeartbeatSchedule, InboundLimits
from sidecar.core.session import QueueBounds
from sidecar.metrics import GatewayMetrics
from sidecar.replay_store import ReplayStore, ReplayWriter
from sidecar.session_registry import SessionRegistry
from wsfleet.headers import REFUSAL_HEADER
from wsfleet.registry import ConnectionRecord, HashSources, QuotaExceeded
from wsfleet.settings import SidecarSettings

log = structlog.get_logger()


HEARTBEAT_TICK_S = 0.05  # the heartbeat loop wakes at most this often


class Refusal(Exception):
    """A handshake refused before any upgrade: HTTP status + short JSON body."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = {}  # more headers for the answer

    def response(self) -> web.Response:
        # The reason also travels in a header: WebSocket clients rarely get to read the body
        # of a refused upgrade, and an operator's tools should show it verbatim.
        headers = {**self.headers, REFUSAL_HEADER: f"{self.reason}: {self.message}"}
        if self.retry_after_s:
            headers["Retry-After"] = str(self.retry_after_s)
        return web.json_response(
            {"error": self.reason, "message": self.message}, status=self.status, headers=headers
        )


class Connection(Protocol):
    """What the gateway needs of any client connection, whatever its transport."""

    connection_id: str
    user_id: str
    transport: str

    @property
    def session_id(self) -> str: ...

    def send_ping(self) -> None: ...

    def queued(self) -> tuple[int, int]: ...

    def idle_for(self, now: float) -> float: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...

    def expire_token(self, wall_now: float) -> bool:
        """Close the connection if its token has expired (and was not refreshed)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake that passed: who, which backend serves them, their registry record."""

    identity: Identity
    record: ConnectionRecord
    link: BackendLink
    subprotocol: str | None
    query: Mapping[str, str]  # the handshake's query (see handshake_query)

    @property
    def connection_id(self) -> str:
        return self.record.connection_id

    @property
    def routing_key(self) -> str:
        return self.record.backend_routing_key


def handshake_query(request: web.Request) -> dict[str, str]:
    """The request's query, parsed for the handshake only (the first value of each name).

    ``request.query`` would keep its parsed form (a MultiDict and its strings) on the
    request, which lives as long as the connection: a few hundred bytes per idle client.
    """
    query: dict[str, str] = {}
    raw = request.rel_url.raw_query_string
    for name, value in urllib.parse.parse_qsl(raw, keep_blank_values=True):
        query.setdefault(name, value)
    return query


def hashed_user(sources: HashSources, request: web.Request, query: Mapping[str, str]) -> str:
    """The user id Envoy hashed this request on: the first of the pool's hash sources
    present, in Envoy's order (header, query parameter, cookie); "" when none is. Raises
    :class:`Refusal` when present sources name different users (a client could otherwise
    be hashed as one user and authenticated as another)."""
    found = []
    if sources.header and (value := request.headers.get(sources.header)) is not None:
        found.append(value)
    if sources.query_parameter and (value := query.get(sources.query_parameter)) is not None:
        found.append(value)
    if sources.cookie and (value := _cookie(request, sources.cookie)) is not None:
        found.append(value)
    if len(set(found)) > 1:
        raise Refusal(400, "user_ambiguous", f"{describe(sources)} name different users")
    return found[0] if found else ""


def describe(sources: HashSources) -> str:
    """``x-user-id, ?user=`` for a header and a query parameter (what a client may send)."""
    names = [sources.header, f"?{sources.query_parameter}=" if sources.query_parameter else None]
    names.append(f"cookie {sources.cookie}" if sources.cookie else None)
    return ", ".join(name for name in names if name)


def _cookie(request: web.Request, name: str) -> str | None:
    """One cookie, parsed for this handshake only (``request.cookies`` would keep them all)."""
    jar = http.cookies.SimpleCookie()
    with contextlib.suppress(http.cookies.CookieError):
        jar.load(request.headers.get("Cookie", ""))
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def routing_key(
    source: str, identity: Identity, request: web.Request, query: Mapping[str, str]
) -> str | None:
    """The session's backend_routing_key, from where the settings say it is."""
    if source == "user":
        return identity.user_id
    kind, _, name = source.partition(":")
    value: object = None
    if kind == "claim":
        value = identity.claims.get(name)
    elif kind == "query":
        value = query.get(name)
    elif kind == "header":
        value = request.headers.get(name)
    return str(value) if value not in (None, "") else None


def choose_subprotocol(
    offered: list[str], supported: tuple[str, ...], token_entry: str | None
) -> str | None:
    """The first supported application subprotocol the client offered; else echo the token
    entry (a browser that offered subprotocols fails a handshake that selects none)."""
    for protocol in offered:
        if protocol in supported:
            return protocol
    return token_entry


@dataclass
class Gateway:
    """Shared state of one sidecar; transports call :meth:`admit`, :meth:`track` and
    :meth:`untrack`."""

    settings: SidecarSettings
    verifier: TokenVerifier
    bridge: BackendBridge
    metrics: GatewayMetrics
    sessions: SessionRegistry
    replay_store: ReplayStore
    replay: ReplayWriter
    draining: bool = False
    hash_sources: HashSources | None = None  # the pool's, from the control plane's policy
    connections: dict[str, Connection] = field(default_factory=dict)  # by connection id
    by_session: dict[str, Connection] = field(default_factory=dict)  # by session id
    heartbeats: HeartbeatSchedule = field(init=False)
    _wake_heartbeats: asyncio.Event = field(default_factory=asyncio.Event)
    _heartbeats_asleep_until: float = 0.0

    def __post_init__(self) -> None:
        settings = self.settings
        self.heartbeats = HeartbeatSchedule(
            HeartbeatPolicy(
                settings.heartbeat_interval_s,
                settings.heartbeat_timeout_s,
                settings.heartbeat_jitter,
            )
        )

    @property
    def pod_id(self) -> str:
        return self.settings.pod_id

    @functools.cached_property
    def queue_bounds(self) -> QueueBounds:
        """Every session's send-queue bounds (one object for the pod)."""
        settings = self.settings
        return QueueBounds(
            settings.send_queue_messages, settings.send_queue_bytes, settings.slow_consumer_grace_s
        )

    def new_limits(self) -> InboundLimits | None:
        """Per-connection inbound limits, or None when the settings set none."""
        settings = self.settings
        limits = InboundLimits(
            messages_per_s=settings.messages_per_s or None,
            message_burst=settings.message_burst or None,
            bytes_per_s=settings.bytes_per_s or None,
            byte_burst=settings.byte_burst or None,
            on_exceed="close" if settings.rate_limit_action == "close" else "drop",
        )
        return None if limits.unlimited else limits

    def authenticate(
        self, request: web.Request, query: Mapping[str, str]
    ) -> tuple[Identity, str | None]:
        """The verified identity (and the subprotocol entry the token came in, if any);
        raises :class:`Refusal`. The user Envoy hashed on must be the token's subject."""
        try:
            token, token_entry = find_token(request.headers, query)
            identity = self.verifier.verify(token)
        except AuthError as exc:
            raise Refusal(exc.status, exc.reason, exc.message) from None
        sources = self.hash_sources
        if sources is None:
            raise Refusal(
                503,
                "no_hash_key",
                "this gateway has not learned from the control plane where its pool's "
                "users are hashed",
                retry_after_s=1,
            )
        if hashed_user(sources, request, query) != identity.user_id:
            raise Refusal(
                403,
                "user_mismatch",
                f"the routing user ({describe(sources)}) must equal the token subject",
            )
        return identity, token_entry

    async def admit(self, request: web.Request, transport: str) -> Admission:
        """Check a handshake; raise :class:`Refusal` with the reason if refused."""
        settings = self.settings
        query = handshake_query(request)
        identity, token_entry = self.authenticate(request, query)
        if self.draining:
            raise Refusal(503, "draining", "this gateway is draining", retry_after_s=1)
        key = routing_key(settings.routing_key_source, identity, request, query)
        if key is None:
            raise Refusal(
                400, "no_routing_key", f"no backend routing key ({settings.routing_key_source})"
            )
        link = self.bridge.link_for(key)
        if link is None:
            raise Refusal(503, "no_backend", "no backend is available", retry_after_s=2)
        record = ConnectionRecord(
            connection_id=os.urandom(16).hex(),  # 128 random bits, as hex
            user_id=identity.user_id,
            shard=settings.pod_id,
            backend_routing_key=key,
            transport=transport,
            connected_at=time.time(),
        )
        try:
            await self.sessions.add(record)
        except QuotaExceeded:
            raise Refusal(
                429,
                "user_quota",
                f"user already holds {settings.max_connections_per_user} connections",
                retry_after_s=5,
            ) from None
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        subprotocol = choose_subprotocol(
            [p for p in offered if p], settings.subprotocols, token_entry
        )
        return Admission(identity, record, link, subprotocol, query)

    def track(self, connection: Connection) -> None:
        self.connections[connection.connection_id] = connection
        self.by_session[connection.session_id] = connection
        if connection.transport == "websocket":  # SSE and poll have their own liveness
            now = asyncio.get_running_loop().time()
            self.heartbeats.add(connection.connection_id, now)
            soonest = self.settings.heartbeat_interval_s * (1 - self.settings.heartbeat_jitter)
            if now + soonest < self._heartbeats_asleep_until:
                self._wake_heartbeats.set()  # its first ping is due before the loop wakes

    def untrack(self, connection: Connection, code: int) -> None:
        self.heartbeats.remove(connection.connection_id)
        if self.by_session.get(connection.session_id) is connection:
            del self.by_session[connection.session_id]
        if self.connections.pop(connection.connection_id, None) is not None:
            self.metrics.closes[code] += 1
        self.sessions.remove(connection.connection_id)

    def pong(self, connection_id: str) -> None:
        now = asyncio.get_running_loop().time()
        rtt = self.heartbeats.pong(connection_id, now)
        if rtt is not None:
            self.metrics.ping_rtt.observe(rtt)
        self.sessions.touch(connection_id, time.time())

    def activity(self, connection_id: str) -> None:
        self.heartbeats.activity(connection_id, asyncio.get_running_loop().time())

    def counts_by_transport(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self.connections.values():
            counts[connection.transport] = counts.get(connection.transport, 0) + 1
        return counts

    def queued(self) -> tuple[int, int]:
        messages = size = 0
        for connection in self.connections.values():
            count, length = connection.queued()
            messages += count
            size += length
        return messages, size

    async def run_heartbeats(self) -> None:
        """One task pings every connection on schedule and cuts the dead ones."""
        loop = asyncio.get_running_loop()
        while True:
            wake = self.heartbeats.next_wakeup()
            delay = 1.0 if wake is None else wake - loop.time()
            self._wake_heartbeats.clear()
            # pings due within a tick go out together: one wake-up for many connections
            delay = min(max(delay, HEARTBEAT_TICK_S), 1.0)
            self._heartbeats_asleep_until = loop.time() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake_heartbeats.wait()
            now = loop.time()
            for connection_id in self.heartbeats.due(now):
                connection = self.connections.get(connection_id)
                if connection is not None:
                    connection.send_ping()
            for connection_id in self.heartbeats.dead(now):
                connection = self.connections.get(connection_id)
                if connection is not None:
                    self.metrics.dead.inc()
                    log.info(
                        "connection_dead", connection_id=connection_id, user_id=connection.user_id
                    )
                    connection.abort()

    async def run_keepalives(self) -> None:
        """Every heartbeat interval: sessions whose token expired are closed (4401); SSE
        streams get a comment; poll sessions that stopped polling for ``poll_timeout_s``
        are gone (their liveness is their requests)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            now, wall_now = loop.time(), time.time()
            for connection in list(self.connections.values()):
                if connection.expire_token(wall_now):
                    continue
                if connection.transport == "sse":
                    connection.send_ping()
                elif connection.transport == "poll" and connection.idle_for(now) > (
                    self.settings.poll_timeout_s
                ):
                    self.metrics.dead.inc()
                    connection.abort()

    async def close_all(self, code: int, reason: str, timeout_s: float) -> None:
        """Close every connection (pod shutdown); give up waiting after ``timeout_s``."""
        closing = [
            asyncio.ensure_future(connection.close(code, reason))
            for connection in list(self.connections.values())
        ]
        if closing:
            await asyncio.wait(closing, timeout=timeout_s)


GATEWAY_KEY = web.AppKey("gateway", Gateway)
