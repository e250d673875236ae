"""The shell of a session's start: it reads the replay store, and does what the plan says
(fakes for the store; the decisions themselves: tests/unit/test_resume_plans.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from sidecar.admission import Admission
from sidecar.auth import Identity
from sidecar.client_session import start_session
from sidecar.core.resume import Reason
from sidecar.core.session import Entry
from sidecar.gateway import Gateway
from sidecar.replay_store import ReplayStoreUnavailable, SessionState

S1 = SessionState("s-1", "alice", last_seq=5, last_cseq=7, backend_last_id=40, first_kept=1)


class Store:
    """The replay store as read at a start: ``None`` for a call that fails."""

    def __init__(self, state: SessionState | None, seqs: list[int] | None = None) -> None:
        self.state, self.seqs = state, seqs
        self.load_fails = False
        self.created: list[tuple[str, str]] = []
        self.errors = 0

    async def load(self, session_id: str) -> SessionState | None:
        if self.load_fails:
            raise ReplayStoreUnavailable
        return self.state if self.state and self.state.session_id == session_id else None

    async def entries(self, session_id: str, after: int, upto: int) -> list[Entry]:
        if self.seqs is None:
            raise ReplayStoreUnavailable
        return [Entry(session_id, seq, b"m%d" % seq, False) for seq in self.seqs]

    def create(self, session_id: str, user_id: str) -> None:
        self.created.append((session_id, user_id))

    def inc(self) -> None:
        self.errors += 1


def _gateway(store: Store) -> Gateway:
    metrics = SimpleNamespace(registry_errors=store)
    return cast(Gateway, SimpleNamespace(replay_store=store, replay=store, metrics=metrics))


def _admission(user: str, **query: str) -> Admission:
    identity = Identity(user, {"sub": user, "exp": 4_000_000_000})
    fake: Any = SimpleNamespace(identity=identity, connection_id="c-9", query=query)
    return cast(Admission, fake)


REQUEST: dict[str, str] = {}  # the handshake's headers


async def test_a_resume_replays_what_the_client_missed_with_the_counters_restored() -> None:
    store = Store(S1, seqs=[3, 4, 5])
    start = await start_session(
        _gateway(store), REQUEST, _admission("alice", session="s-1", last_seq="2"), True
    )
    assert (start.session_id, start.resumed, start.backend_last_id) == ("s-1", True, 40)
    assert start.plan is not None and start.plan.reason is Reason.REPLAY
    assert [e.seq for e in start.entries] == [3, 4, 5]
    assert start.sequencer is not None and start.sequencer.next_seq == 6
    assert start.sequencer.last_cseq == 7 and store.created == []


async def test_a_hole_or_a_failed_read_resumes_the_session_with_a_resync_and_no_replay() -> None:
    for seqs, reason, errors in (([3, 5], Reason.HOLE, 0), (None, Reason.STORE_UNAVAILABLE, 1)):
        store = Store(S1, seqs)
        start = await start_session(
            _gateway(store), REQUEST, _admission("alice", session="s-1", last_seq="2"), True
        )
        assert (start.session_id, start.resumed, start.entries) == ("s-1", True, [])
        assert start.plan is not None and (start.plan.reason, start.plan.resync) == (reason, True)
        assert store.errors == errors and store.created == []


async def test_a_session_that_cannot_be_resumed_is_a_new_one_created_for_this_user() -> None:
    down = Store(S1)
    down.load_fails = True
    cases = [
        (down, "alice", Reason.STORE_UNAVAILABLE, 1),
        (Store(S1), "bob", Reason.USER_MISMATCH, 0),
        (Store(None), "alice", Reason.UNKNOWN_SESSION, 0),
    ]
    for store, user, reason, errors in cases:
        start = await start_session(
            _gateway(store), REQUEST, _admission(user, session="s-1", last_seq="2"), True
        )
        assert (start.session_id, start.resumed, start.entries) == ("c-9", False, [])
        assert start.plan is not None and (start.plan.reason, start.plan.resync) == (reason, True)
        assert start.sequencer is not None and start.sequencer.next_seq == 1
        assert store.created == [("c-9", user)] and store.errors == errors


async def test_a_fresh_session_is_created_without_resync_and_a_raw_one_not_at_all() -> None:
    store = Store(None)
    start = await start_session(_gateway(store), REQUEST, _admission("alice"), True)
    assert start.plan is not None and (start.plan.reason, start.plan.resync) == (
        Reason.FRESH,
        False,
    )
    assert store.created == [("c-9", "alice")]
    raw = await start_session(_gateway(store), REQUEST, _admission("alice"), False)
    assert raw.sequencer is None and raw.plan is None and len(store.created) == 1
