"""How a v1 session starts: what the shell read from the replay store in, the plan out
(new session or resume, replay or resync, and why)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sidecar.core.resume import Reason, ResumePlan, Start, plan_replay, plan_start
from sidecar.replay_store import SessionState


@dataclass(frozen=True)
class Stored:
    user_id: str
    last_seq: int
    first_kept: int | None


ALICE_9 = Stored("alice", last_seq=9, first_kept=3)  # seqs 3..9 still kept

# requested, stored, store reachable, user, client's last seq -> start, reason, resync,
# replay (after, upto]
CASES = [
    (False, None, True, "alice", 0, Start.NEW, Reason.FRESH, False, (0, 0)),
    (False, None, False, "alice", 4, Start.NEW, Reason.FRESH, False, (0, 0)),  # not asked
    (True, None, True, "alice", 4, Start.NEW, Reason.UNKNOWN_SESSION, True, (0, 0)),
    (True, None, False, "alice", 4, Start.NEW, Reason.STORE_UNAVAILABLE, True, (0, 0)),
    (True, ALICE_9, True, "bob", 4, Start.NEW, Reason.USER_MISMATCH, True, (0, 0)),
    (True, ALICE_9, True, "alice", 9, Start.RESUME, Reason.UP_TO_DATE, False, (9, 9)),
    (True, ALICE_9, True, "alice", 4, Start.RESUME, Reason.REPLAY, False, (4, 9)),
    (True, ALICE_9, True, "alice", 2, Start.RESUME, Reason.REPLAY, False, (2, 9)),  # 3 kept
    (True, ALICE_9, True, "alice", 1, Start.RESUME, Reason.OUT_OF_WINDOW, True, (9, 9)),
    (True, ALICE_9, True, "alice", 0, Start.RESUME, Reason.OUT_OF_WINDOW, True, (9, 9)),
    (True, Stored("alice", 9, None), True, "alice", 4, Start.RESUME, Reason.OUT_OF_WINDOW,
     True, (9, 9)),  # everything trimmed
    (True, ALICE_9, True, "alice", 12, Start.RESUME, Reason.CLIENT_AHEAD, True, (9, 9)),
    (True, Stored("alice", 0, None), True, "alice", 0, Start.RESUME, Reason.UP_TO_DATE,
     False, (0, 0)),  # nothing ever sent
]  # fmt: skip


@pytest.mark.parametrize(
    ("requested", "stored", "reachable", "user", "last_seq", "start", "reason", "resync", "span"),
    CASES,
)
def test_the_start_plan_follows_from_what_the_store_said(
    requested: bool,
    stored: Stored | None,
    reachable: bool,
    user: str,
    last_seq: int,
    start: Start,
    reason: Reason,
    resync: bool,
    span: tuple[int, int],
) -> None:
    plan = plan_start(requested, stored, reachable, user, last_seq)
    assert (plan.start, plan.reason, plan.resync) == (start, reason, resync)
    assert (plan.replay_after, plan.replay_upto) == span
    assert plan.replays == (span[1] > span[0])


def test_the_replay_store_record_is_what_the_plan_reads() -> None:
    state = SessionState("s-1", "alice", 9, 0, 0, first_kept=5)
    assert plan_start(True, state, True, "alice", 6).reason is Reason.REPLAY
    assert plan_start(True, state, True, "alice", 3).reason is Reason.OUT_OF_WINDOW


REPLAY_4_TO_8 = ResumePlan(4, 8, False, Reason.REPLAY)

# seqs read (None: the store failed) -> reason, resync, replay (after, upto]
READS = [
    ([5, 6, 7, 8], Reason.REPLAY, False, (4, 8)),
    ([5, 7, 8], Reason.HOLE, True, (8, 8)),  # 6 lost (a failover)
    ([5, 6, 7], Reason.HOLE, True, (8, 8)),  # the newest lost
    ([6, 7, 8], Reason.HOLE, True, (8, 8)),  # the oldest trimmed meanwhile
    ([], Reason.HOLE, True, (8, 8)),
    (None, Reason.STORE_UNAVAILABLE, True, (8, 8)),
]


@pytest.mark.parametrize(("seqs", "reason", "resync", "span"), READS)
def test_a_replay_read_short_of_the_plan_turns_it_into_a_resync_of_the_same_session(
    seqs: list[int] | None, reason: Reason, resync: bool, span: tuple[int, int]
) -> None:
    plan = plan_replay(REPLAY_4_TO_8, seqs)
    assert (plan.start, plan.reason, plan.resync) == (Start.RESUME, reason, resync)
    assert (plan.replay_after, plan.replay_upto) == span
    assert not plan.replays or plan is REPLAY_4_TO_8
