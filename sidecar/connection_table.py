"""Every client connection of this pod: by connection and by session, their heartbeats
(one loop pings them all and cuts the dead) and the keep-alive sweep (expired tokens, SSE
comments, poll sessions that stopped polling)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Protocol

import structlog

from sidecar.core import HeartbeatPolicy, HeartbeatSchedule
from sidecar.metrics import GatewayMetrics
from sidecar.session_registry import SessionRegistry

log = structlog.get_logger()

HEARTBEAT_TICK_S = 0.05  # the heartbeat loop wakes at most this often


class Connection(Protocol):
    """What the gateway needs of any client connection, whatever its transport."""

    connection_id: str
    user_id: str
    transport: str

    @property
    def session_id(self) -> str: ...

    def send_ping(self) -> None: ...

    def written_to(self) -> bool:
        """Whether frames were written to the client since this was last asked."""

    def queued(self) -> tuple[int, int]: ...

    def idle_for(self, now: float) -> float: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...

    def expire_token(self, wall_now: float) -> bool:
        """Close the connection if its token has expired (and was not refreshed)."""


class ConnectionTable:
    def __init__(
        self,
        policy: HeartbeatPolicy,
        metrics: GatewayMetrics,
        sessions: SessionRegistry,
        poll_timeout_s: float,
    ) -> None:
        self.policy = policy
        self.heartbeats = HeartbeatSchedule(policy)
        self.connections: dict[str, Connection] = {}  # by connection id
        self.by_session: dict[str, Connection] = {}  # by session id
        self.by_user: dict[str, list[Connection]] = {}  # by user id (server API commands)
        # the Envoy each came through (its x-wsfleet-edge header): an Envoy's drain closes
        # exactly its own (sidecar.edge_drain)
        self.edges: dict[str, str] = {}  # connection id -> Envoy node id
        self._metrics = metrics
        self._sessions = sessions
        self._poll_timeout_s = poll_timeout_s
        self._wake_heartbeats = asyncio.Event()
        self._heartbeats_asleep_until = 0.0

    def track(self, connection: Connection) -> None:
        self.connections[connection.connection_id] = connection
        self.by_session[connection.session_id] = connection
        self.by_user.setdefault(connection.user_id, []).append(connection)
        if connection.transport == "websocket":  # SSE and poll have their own liveness
            now = asyncio.get_running_loop().time()
            self.heartbeats.add(connection.connection_id, now)
            soonest = self.policy.interval_s * (1 - self.policy.jitter)
            if now + soonest < self._heartbeats_asleep_until:
                self._wake_heartbeats.set()  # its first ping is due before the loop wakes

    def set_edge(self, connection_id: str, edge: str) -> None:
        """Record the Envoy a tracked connection came through (nothing if it is gone
        already, or came through none)."""
        if edge and connection_id in self.connections:
            self.edges[connection_id] = sys.intern(edge)  # a few Envoys: one string each

    def of_edge(self, edge: str) -> list[Connection]:
        """The connections that came through Envoy ``edge``."""
        return [
            connection
            for connection_id, through in self.edges.items()
            if through == edge and (connection := self.connections.get(connection_id))
        ]

    def untrack(self, connection: Connection, code: int) -> None:
        self.heartbeats.remove(connection.connection_id)
        if self.connections.get(connection.connection_id) is connection:
            self.edges.pop(connection.connection_id, None)
        if self.by_session.get(connection.session_id) is connection:
            del self.by_session[connection.session_id]
        users = self.by_user.get(connection.user_id)
        if users is not None and connection in users:
            users.remove(connection)
            if not users:
                del self.by_user[connection.user_id]
        if self.connections.pop(connection.connection_id, None) is not None:
            self._metrics.closes[code] += 1
        self._sessions.remove(connection.connection_id)

    def pong(self, connection_id: str) -> None:
        now = asyncio.get_running_loop().time()
        rtt = self.heartbeats.pong(connection_id, now)
        if rtt is not None:
            self._metrics.ping_rtt.observe(rtt)
        self._sessions.touch(connection_id, time.time())

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
            for connection_id in self.heartbeats.due(now, self._written_to):
                connection = self.connections.get(connection_id)
                if connection is not None:
                    connection.send_ping()
            heard = self.heartbeats.take_heard()
            if heard:  # alive by their own frames, not pinged: marked as a pong marks them
                wall_now = time.time()
                for connection_id in heard:
                    self._sessions.touch(connection_id, wall_now)
            for connection_id in self.heartbeats.dead(now):
                connection = self.connections.get(connection_id)
                if connection is not None:
                    self._metrics.dead.inc()
                    log.info(
                        "connection_dead", connection_id=connection_id, user_id=connection.user_id
                    )
                    connection.abort()

    def _written_to(self, connection_id: str) -> bool:
        connection = self.connections.get(connection_id)
        return connection is not None and connection.written_to()

    async def run_keepalives(self) -> None:
        """Every heartbeat interval: sessions whose token expired are closed (4401); SSE
        streams get a comment; poll sessions that stopped polling for ``poll_timeout_s``
        are gone (their liveness is their requests). The SSE streams still open and the
        poll sessions still polling are marked alive in the registry, as a pong marks a
        WebSocket (written with the next batched flush): else their records would expire,
        and the user's quota, ``/connections`` and ``/disconnect`` would lose them."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.policy.interval_s)
            self.keep_alive(loop.time(), time.time())

    def keep_alive(self, now: float, wall_now: float) -> None:
        """One sweep of :meth:`run_keepalives`."""
        for connection in list(self.connections.values()):
            if connection.expire_token(wall_now):
                continue
            if connection.transport == "sse":
                connection.send_ping()
                self._sessions.touch(connection.connection_id, wall_now)
            elif connection.transport == "poll":
                if connection.idle_for(now) > self._poll_timeout_s:
                    self._metrics.dead.inc()
                    connection.abort()
                else:
                    self._sessions.touch(connection.connection_id, wall_now)

    async def close_all(self, code: int, reason: str, timeout_s: float) -> None:
        """Close every connection (pod shutdown); give up waiting after ``timeout_s``."""
        closing = [
            asyncio.ensure_future(connection.close(code, reason))
            for connection in list(self.connections.values())
        ]
        if closing:
            await asyncio.wait(closing, timeout=timeout_s)
