"""Heartbeats for every connection of a gateway: when to ping, ping RTTs, dead sockets.

A :class:`HeartbeatSchedule` keeps two heaps of timers (pings due, deadlines) for all
connections; a timer made stale by a pong, a frame or a close is skipped when it comes
up rather than searched for. There is no timer per connection and no scan of all
connections: a tick costs O(log n) per timer that is due.

The caller (the event-loop glue) sleeps until :meth:`HeartbeatSchedule.next_wakeup`,
pings the connections :meth:`~HeartbeatSchedule.due` returns, closes the ones
:meth:`~HeartbeatSchedule.dead` returns, and records as alive the ones
:meth:`~HeartbeatSchedule.take_heard` returns.

A connection busy both ways since its last ping — it sent the gateway a frame of its own
(a message, a ping: anything but a pong) and the gateway wrote it frames (the caller says
which, :meth:`~HeartbeatSchedule.due`'s ``written_to``) — is not pinged when its ping comes
due: its frame proved it alive, and the gateway's kept the client's own watchdog fed
(the SDKs reconnect after a silence from the server). Its next ping is due one interval
after the frame heard; ``take_heard`` names it, so that the caller can note it alive as a
pong would. Connections quiet either way for an interval are pinged.

Detection bound: a connection is dead ``timeout_s`` after the first ping sent since
the last frame it sent (any frame counts, not only pongs). A ping goes out at most
``interval_s`` after the previous one or the last frame heard, so a socket that goes
silent is found dead within ``interval_s + timeout_s`` of its last frame: 30 s with the
defaults.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

_COMPACT_FLOOR = 1024  # never rebuild a heap smaller than this


def _never(conn_id: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """How often to ping, and how long a connection may stay silent after a ping.

    Each ping is due ``interval_s * (1 - jitter * u)`` after the previous one (``u``
    uniform in [0, 1)), so that connections opened together are not pinged together.
    """

    interval_s: float = 15.0
    timeout_s: float = 15.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"heartbeat interval_s must be positive, got {self.interval_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"heartbeat timeout_s must be positive, got {self.timeout_s}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"heartbeat jitter must be in [0, 1), got {self.jitter}")

    @property
    def detection_bound_s(self) -> float:
        """The longest a silently dead socket goes unnoticed after its last frame."""
        return self.interval_s + self.timeout_s


@dataclass(slots=True, eq=False)
class _Liveness:
    """What the schedule knows about one connection."""

    conn_id: str
    ping_at: float  # when the next ping is due
    since: float  # the start of its current interval: added, last pinged, or last vouched
    heard_at: float = float("-inf")  # the last frame of its own (not a pong) received
    silent_since: float | None = None  # first ping sent since the last frame received
    unanswered_ping: float | None = None  # oldest ping sent and not yet ponged, for RTTs
    gone: bool = False  # removed or declared dead: its timers are stale


_Timer = tuple[float, int, _Liveness]  # (when, tie-breaker, connection)


@dataclass(slots=True)
class HeartbeatSchedule:
    """Ping times, RTTs and dead-socket verdicts for any number of connections.

    Every method takes ``now`` in seconds (any monotonic clock, e.g. the event loop's).
    """

    policy: HeartbeatPolicy = field(default_factory=HeartbeatPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _connections: dict[str, _Liveness] = field(default_factory=dict, init=False, repr=False)
    _pings: list[_Timer] = field(default_factory=list, init=False, repr=False)
    _deadlines: list[_Timer] = field(default_factory=list, init=False, repr=False)
    _sequence: int = field(default=0, init=False, repr=False)
    _heard: list[str] = field(default_factory=list, init=False, repr=False)

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._connections

    def add(self, conn_id: str, now: float) -> None:
        """Start watching a connection; its first ping is one jittered interval away.

        Adding an id that is already watched starts it afresh.
        """
        self.remove(conn_id)
        liveness = _Liveness(conn_id, ping_at=self._next_ping(now), since=now)
        self._connections[conn_id] = liveness
        self._push(self._pings, liveness.ping_at, liveness)

    def remove(self, conn_id: str) -> None:
        """Stop watching a connection (it closed); unknown ids are ignored."""
        liveness = self._connections.pop(conn_id, None)
        if liveness is None:
            return
        liveness.gone = True
        self._compact_if_sparse()

    def activity(self, conn_id: str, now: float) -> None:
        """A frame of the client's own (a message, a ping) arrived at ``now``: it is alive,
        clear its deadline, and its next ping waits for an interval of silence.

        A frame stamped before the ping it would answer (``now`` earlier than that
        ping was sent) proves nothing about that ping and is ignored.
        """
        liveness = self._connections.get(conn_id)
        if liveness is None:
            return
        if now > liveness.heard_at:
            liveness.heard_at = now
        self._answered(liveness, now)

    @staticmethod
    def _answered(liveness: _Liveness, now: float) -> None:
        if liveness.silent_since is not None and now >= liveness.silent_since:
            liveness.silent_since = None  # its deadline timer is now stale

    def pong(self, conn_id: str, now: float) -> float | None:
        """A pong arrived: returns the round-trip time of the ping it answers, if any.

        The RTT is measured from the oldest unanswered ping (pongs arrive in order), so
        a stalled path shows up as a long RTT rather than being hidden by later pings.
        A pong also clears the deadline, as :meth:`activity` does, but never spares the
        next ping: it answered one.
        """
        liveness = self._connections.get(conn_id)
        if liveness is None:
            return None
        self._answered(liveness, now)
        if liveness.unanswered_ping is None:
            return None
        if now < liveness.unanswered_ping:
            return None
        rtt = now - liveness.unanswered_ping
        liveness.unanswered_ping = None
        return rtt

    def due(self, now: float, written_to: Callable[[str], bool] = _never) -> list[str]:
        """The connections to ping now; the caller sends the pings.

        Each is returned once per (jittered) interval; the ping counts as sent at ``now``,
        and the next one is due one jittered interval after ``now``. ``written_to(conn)``
        says whether the gateway wrote that connection frames since it was last asked
        (asked once per connection due); one that also sent a frame of its own since its
        interval began is not pinged: its next ping is due one jittered interval after the
        frame heard, and :meth:`take_heard` names it.
        """
        pinged: list[str] = []
        timers = self._pings
        timeout = self.policy.timeout_s
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)
            if not _ping_is_live(timer):
                continue  # closed, or re-added since
            liveness = timer[2]
            busy = written_to(liveness.conn_id)  # asked of every one due: a new interval
            if busy and liveness.heard_at > liveness.since and liveness.silent_since is None:
                later = self._next_ping(liveness.heard_at)
                if later > now:  # its own frame vouched for it: no ping this interval
                    liveness.since = liveness.heard_at
                    liveness.ping_at = later
                    self._push(timers, later, liveness)
                    self._heard.append(liveness.conn_id)
                    continue
            liveness.since = now
            pinged.append(liveness.conn_id)
            if liveness.silent_since is None:
                liveness.silent_since = now
                self._push(self._deadlines, now + timeout, liveness)
            sent = liveness.unanswered_ping
            if sent is None or now - sent >= timeout:  # an older ping is taken as lost
                liveness.unanswered_ping = now
            liveness.ping_at = self._next_ping(now)
            self._push(timers, liveness.ping_at, liveness)
        return pinged

    def take_heard(self) -> list[str]:
        """The connections :meth:`due` found alive by frames of their own (instead of
        pinging them) since the last call; each at most once per interval."""
        heard, self._heard = self._heard, []
        return heard

    def dead(self, now: float) -> list[str]:
        """The connections silent for ``timeout_s`` after a ping; each is reported once
        and forgotten (the caller closes them)."""
        found: list[str] = []
        timers = self._deadlines
        timeout = self.policy.timeout_s
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)
            if not _deadline_is_live(timer, timeout):
                continue  # closed, or a deadline of an earlier silence since answered
            liveness = timer[2]
            found.append(liveness.conn_id)
            liveness.gone = True
            del self._connections[liveness.conn_id]
        return found

    def next_wakeup(self) -> float | None:
        """The earliest time :meth:`due` or :meth:`dead` has work; None if nothing is
        watched. Calling them earlier is harmless."""
        self._drop_stale_tops()
        tops = [timers[0][0] for timers in (self._pings, self._deadlines) if timers]
        return min(tops) if tops else None

    def _next_ping(self, now: float) -> float:
        policy = self.policy
        return now + policy.interval_s * (1.0 - policy.jitter * self.rng.random())

    def _push(self, timers: list[_Timer], at: float, liveness: _Liveness) -> None:
        self._sequence += 1
        heapq.heappush(timers, (at, self._sequence, liveness))

    def _drop_stale_tops(self) -> None:
        pings, deadlines = self._pings, self._deadlines
        while pings and not _ping_is_live(pings[0]):
            heapq.heappop(pings)
        while deadlines and not _deadline_is_live(deadlines[0], self.policy.timeout_s):
            heapq.heappop(deadlines)

    def _compact_if_sparse(self) -> None:
        """Rebuild a heap that is mostly stale timers (heavy churn of short connections),
        so that memory follows the live connections, not the closed ones."""
        live = len(self._connections)
        if len(self._pings) > max(_COMPACT_FLOOR, 2 * live):
            self._pings = [timer for timer in self._pings if _ping_is_live(timer)]
            heapq.heapify(self._pings)
        if len(self._deadlines) > max(_COMPACT_FLOOR, 2 * live):
            timeout = self.policy.timeout_s
            self._deadlines = [t for t in self._deadlines if _deadline_is_live(t, timeout)]
            heapq.heapify(self._deadlines)


def _ping_is_live(timer: _Timer) -> bool:
    at, _, liveness = timer
    return not liveness.gone and liveness.ping_at == at


def _deadline_is_live(timer: _Timer, timeout_s: float) -> bool:
    at, _, liveness = timer
    since = liveness.silent_since
    return not liveness.gone and since is not None and since + timeout_s == at
