"""Heartbeats for many connections: when to ping, ping RTTs, and which sockets are dead.

One :class:`HeartbeatSchedule` serves every connection of a gateway through a
single heap of timers (no per-connection timer, no scan of all connections).
The aiohttp glue calls :meth:`HeartbeatSchedule.tick` when
:meth:`HeartbeatSchedule.next_wakeup` comes, sends the pings it returns and
closes the dead connections it returns.

A connection is dead when ``timeout_s`` passes after a ping with no pong and no
other frame from the client. Since pings go out every ``interval_s`` (minus
up to ``jitter`` of it, so that connections opened together are not pinged
together), a socket that dies silently is found within ``interval_s +
timeout_s`` (30 s with the defaults).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

_PING = 0
_DEADLINE = 1


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """Ping every ``interval_s`` (less up to ``jitter`` of it); dead ``timeout_s`` after a
    ping with no answer."""

    interval_s: float = 10.0
    timeout_s: float = 20.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("heartbeat interval and timeout must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("heartbeat jitter must be in [0, 1)")

    @property
    def detection_bound_s(self) -> float:
        """The longest a silently dead socket can go unnoticed."""
        return self.interval_s + self.timeout_s


@dataclass(frozen=True, slots=True)
class Tick:
    """What to do now: ping these, close those (dead)."""

    ping: list[str]
    dead: list[str]


@dataclass(slots=True)
class _Connection:
    ping_token: int = 0
    deadline_token: int = 0
    unanswered_since: float | None = None  # the oldest ping with no answer yet


@dataclass
class HeartbeatSchedule:
    """Ping times, RTTs and dead-socket verdicts for any number of connections."""

    policy: HeartbeatPolicy = field(default_factory=HeartbeatPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _connections: dict[str, _Connection] = field(default_factory=dict)
    _timers: list[tuple[float, int, str, int]] = field(default_factory=list)
    _sequence: int = 0

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, conn_id: str, now: float) -> None:
        """Track a new connection; its first ping is one jittered interval away."""
        self._connections[conn_id] = connection = _Connection()
        self._schedule_ping(conn_id, connection, now)

    def remove(self, conn_id: str) -> None:
        self._connections.pop(conn_id, None)  # its timers are dropped when they come up

    def activity(self, conn_id: str, now: float) -> None:
        """Any frame from the client: it is alive."""
        connection = self._connections.get(conn_id)
        if connection is not None and connection.unanswered_since is not None:
            connection.unanswered_since = None
            connection.deadline_token += 1

    def pong(self, conn_id: str, now: float) -> float | None:
        """A pong: returns the round-trip time of the ping it answers, if one was pending."""
        connection = self._connections.get(conn_id)
        if connection is None or connection.unanswered_since is None:
            return None
        rtt = now - connection.unanswered_since
        self.activity(conn_id, now)
        return max(0.0, rtt)

    def tick(self, now: float) -> Tick:
        """Pop every timer due by ``now``: connections to ping, and dead connections."""
        ping: list[str] = []
        dead: list[str] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, conn_id, tagged = heapq.heappop(timers)
            connection = self._connections.get(conn_id)
            if connection is None:
                continue
            kind, token = tagged & 1, tagged >> 1
            if kind == _PING and token == connection.ping_token:
                ping.append(conn_id)
                if connection.unanswered_since is None:
                    connection.unanswered_since = now
                    connection.deadline_token += 1
                    self._push(
                        now + self.policy.timeout_s, conn_id, _DEADLINE, connection.deadline_token
                    )
                self._schedule_ping(conn_id, connection, now)
            elif (
                kind == _DEADLINE
                and token == connection.deadline_token
                and connection.unanswered_since is not None
            ):
                dead.append(conn_id)
                del self._connections[conn_id]
        return Tick(ping, dead)

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` next has something to do (maybe a little early), or None."""
        return self._timers[0][0] if self._timers else None

    def _schedule_ping(self, conn_id: str, connection: _Connection, now: float) -> None:
        spread = 1.0 - self.policy.jitter * self.rng.random()
        connection.ping_token += 1
        self._push(now + self.policy.interval_s * spread, conn_id, _PING, connection.ping_token)

    def _push(self, at: float, conn_id: str, kind: int, token: int) -> None:
        self._sequence += 1
        heapq.heappush(self._timers, (at, self._sequence, conn_id, token << 1 | kind))
