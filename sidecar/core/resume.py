"""Resumable sessions: sequence numbers out, duplicate detection in, resume decisions.

Every server->client message of a (protocol v1) session gets the next sequence
number; the client reports the last one it saw when it reconnects, and the
gateway replays exactly what came after from the session's replay buffer, or,
when the buffer no longer reaches back that far, says plainly that the client
must resync. Client->server messages carry the client's own sequence number
(``cseq``): one already seen is not delivered to the backend twice.

How a v1 session starts is decided here, from what the shell read from the replay store
(:func:`plan_start`, then :func:`plan_replay` once the entries are read); the shell only
reads, writes and acts on the plan. Every plan carries its :class:`Reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Protocol


@dataclass(slots=True)
class Sequencer:
    """A session's counters: the next outbound ``seq``, the last inbound ``cseq``."""

    next_seq: int = 1
    last_cseq: int = 0

    def assign(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def accept_client(self, cseq: int) -> bool:
        """False for a resend of a message already delivered (``cseq`` 0: not numbered)."""
        if cseq <= 0:
            return True
        if cseq <= self.last_cseq:
            return False
        self.last_cseq = cseq
        return True


class Start(Enum):
    """Which session a v1 client gets."""

    NEW = "new"  # a new session (its welcome says resync when the client asked to resume)
    RESUME = "resume"  # the stored session goes on, its seq and cseq where they were


class Reason(StrEnum):
    """Why a session starts the way it does (logged; the client sees only ``resync``)."""

    FRESH = "fresh"  # no session asked for
    UNKNOWN_SESSION = "unknown_session"  # asked for one the store does not hold (expired)
    STORE_UNAVAILABLE = "store_unavailable"  # the store could not be read: never refused
    USER_MISMATCH = "user_mismatch"  # the session belongs to another user
    UP_TO_DATE = "up_to_date"  # the client has everything: nothing to replay
    REPLAY = "replay"  # what the client missed is replayed after the welcome
    CLIENT_AHEAD = "client_ahead"  # the client saw more than was ever sent: not this session
    OUT_OF_WINDOW = "out_of_window"  # the replay buffer no longer reaches back that far
    HOLE = "hole"  # the entries read miss a seq (a Redis failover, an outage)


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What a connecting v1 client gets: the stored session or a new one (``start``),
    ``(after, upto]`` replayed, or a resync notice in the welcome; and why."""

    replay_after: int
    replay_upto: int
    resync: bool
    reason: Reason = field(default=Reason.REPLAY, compare=False)
    start: Start = field(default=Start.RESUME, compare=False)

    @property
    def replays(self) -> bool:
        return self.replay_upto > self.replay_after


class StoredSession(Protocol):
    """What the replay store holds of a session (``sidecar.replay_store.SessionState``)."""

    @property
    def user_id(self) -> str: ...

    @property
    def last_seq(self) -> int: ...  # the session's last assigned seq

    @property
    def first_kept(self) -> int | None: ...  # the oldest seq still kept (None: none)


def plan_start(
    requested: bool,
    stored: StoredSession | None,
    store_reachable: bool,
    user_id: str,
    client_last_seq: int,
) -> ResumePlan:
    """How a v1 session starts.

    ``requested``: the client named a session to resume; ``stored``: what the store holds
    of it (None: nothing, or the store was not asked or could not be read);
    ``store_reachable``: whether the read worked; ``user_id``: who the token names;
    ``client_last_seq``: the last seq the client saw. A session the store cannot vouch
    for is never refused: a new one starts, and the client is told to resync.
    """
    if not requested:
        return _new(Reason.FRESH, resync=False)
    if not store_reachable:
        return _new(Reason.STORE_UNAVAILABLE)
    if stored is None:
        return _new(Reason.UNKNOWN_SESSION)
    if stored.user_id != user_id:
        return _new(Reason.USER_MISMATCH)
    return plan_resume(client_last_seq, stored.first_kept, stored.last_seq)


def _new(reason: Reason, resync: bool = True) -> ResumePlan:
    return ResumePlan(0, 0, resync, reason, Start.NEW)


def plan_resume(client_last_seq: int, first_kept: int | None, last_sent: int) -> ResumePlan:
    """Decide a resume of a stored session.

    ``first_kept``: the oldest seq still in the replay buffer (None: buffer empty);
    ``last_sent``: the session's last assigned seq.
    """
    if client_last_seq > last_sent:
        return _resync(last_sent, Reason.CLIENT_AHEAD)
    if client_last_seq == last_sent:
        return ResumePlan(last_sent, last_sent, False, Reason.UP_TO_DATE)
    if first_kept is None or first_kept > client_last_seq + 1:  # the gap left the window
        return _resync(last_sent, Reason.OUT_OF_WINDOW)
    return ResumePlan(client_last_seq, last_sent, False, Reason.REPLAY)


def _resync(last_sent: int, reason: Reason) -> ResumePlan:
    return ResumePlan(last_sent, last_sent, True, reason)


def plan_replay(plan: ResumePlan, seqs: list[int] | None) -> ResumePlan:
    """The plan once its entries are read (``seqs``; None: the store could not be read):
    unchanged when they are every seq it replays, else a resync of the same session."""
    if seqs is None:
        return _resync(plan.replay_upto, Reason.STORE_UNAVAILABLE)
    if not replay_is_whole(plan, seqs):
        return _resync(plan.replay_upto, Reason.HOLE)
    return plan


def replay_is_whole(plan: ResumePlan, seqs: list[int]) -> bool:
    """Whether the entries read for ``plan`` are every seq it replays, in order. One
    missing (a Redis failover loses what the old master had not passed on to its
    replica) turns the resume into a resync: a client is never handed a silent gap."""
    return seqs == list(range(plan.replay_after + 1, plan.replay_upto + 1))
