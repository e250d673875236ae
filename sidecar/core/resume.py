"""Resumable sessions: sequence numbers out, duplicate detection in, resume decisions.

Every server->client message of a (protocol v1) session gets the next sequence
number; the client reports the last one it saw when it reconnects, and the
gateway replays exactly what came after from the session's replay buffer, or,
when the buffer no longer reaches back that far, says plainly that the client
must resync. Client->server messages carry the client's own sequence number
(``cseq``): one already seen is not delivered to the backend twice.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What a reconnecting client gets: replay ``(after, upto]``, or a resync notice."""

    replay_after: int
    replay_upto: int
    resync: bool

    @property
    def replays(self) -> bool:
        return self.replay_upto > self.replay_after


def plan_resume(client_last_seq: int, first_kept: int | None, last_sent: int) -> ResumePlan:
    """Decide a resume.

    ``first_kept``: the oldest seq still in the replay buffer (None: buffer empty);
    ``last_sent``: the session's last assigned seq.
    """
    if client_last_seq > last_sent:  # the client saw more than was ever sent: not this session
        return ResumePlan(last_sent, last_sent, resync=True)
    if client_last_seq == last_sent:
        return ResumePlan(last_sent, last_sent, resync=False)
    if first_kept is None or first_kept > client_last_seq + 1:  # the gap left the window
        return ResumePlan(last_sent, last_sent, resync=True)
    return ResumePlan(client_last_seq, last_sent, resync=False)


def replay_is_whole(plan: ResumePlan, seqs: list[int]) -> bool:
    """Whether the entries read for ``plan`` are every seq it replays, in order. One
    missing (a Redis failover loses what the old master had not passed on to its
    replica) turns the resume into a resync: a client is never handed a silent gap."""
    return seqs == list(range(plan.replay_after + 1, plan.replay_upto + 1))
