"""Token lifetime: when a session's token has expired, what a refresh does to it (a fake
wall clock: Unix seconds passed in)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from sidecar.auth import Identity
from sidecar.core.close_codes import CloseCode
from sidecar.core.resume import Sequencer
from sidecar.core.session import QueueBounds, SessionCore, SessionCounters
from sidecar.core.token_life import (
    TOKEN_EXPIRED,
    RefreshOutcome,
    TokenRefused,
    judge_refresh,
)


@dataclass(frozen=True)
class Token:
    user_id: str
    expires_at: float


# the session's user and expiry, the token as verified -> outcome, expiry after, notice
CASES = [
    ("alice", 100.0, Token("alice", 160.0), RefreshOutcome.EXTENDED, 160.0, "token_refreshed"),
    ("alice", 100.0, Token("alice", 100.0), RefreshOutcome.KEPT, 100.0, "token_refreshed"),
    ("alice", 100.0, Token("alice", 50.0), RefreshOutcome.KEPT, 100.0, "token_refreshed"),
    ("alice", 100.0, Token("bob", 900.0), RefreshOutcome.REFUSED, 100.0,
     "refresh_refused: user_mismatch"),
    ("alice", 100.0, TokenRefused("expired"), RefreshOutcome.REFUSED, 100.0,
     "refresh_refused: expired"),
    ("alice", 100.0, TokenRefused("bad_signature"), RefreshOutcome.REFUSED, 100.0,
     "refresh_refused: bad_signature"),
]  # fmt: skip


@pytest.mark.parametrize(("user", "expires_at", "token", "outcome", "after", "notice"), CASES)
def test_a_refresh_extends_only_with_a_later_token_of_the_same_user(
    user: str,
    expires_at: float,
    token: Token | TokenRefused,
    outcome: RefreshOutcome,
    after: float,
    notice: str,
) -> None:
    verdict = judge_refresh(user, expires_at, token)
    assert (verdict.outcome, verdict.expires_at, verdict.notice) == (outcome, after, notice)
    assert verdict.accepted == (outcome is not RefreshOutcome.REFUSED)


def test_a_token_has_expired_from_its_exp_on_and_the_session_closes_4401() -> None:
    core = _session(expires_at=100.0)
    assert not core.token_expired(99.999) and core.closing is None
    assert core.token_expired(100.0) and core.token_expired(250.0)
    assert core.closing == TOKEN_EXPIRED == (CloseCode.TOKEN_EXPIRED, "token expired")


def _session(expires_at: float) -> SessionCore:
    bounds = QueueBounds(100, 1 << 20, 5.0)
    return SessionCore("s1", Sequencer(), SessionCounters(), bounds, None, 0, expires_at)


def _notices(core: SessionCore) -> list[str]:
    out = []
    while (frame := core.next_frame()) is not None:
        out.append(json.loads(frame.data)["reason"])
    return out


def test_a_refreshed_session_lives_until_the_new_expiry_and_then_closes_4401() -> None:
    core = _session(expires_at=100.0)
    verdict = core.refresh("alice", Identity("alice", {"sub": "alice", "exp": 160}), now=0.0)
    assert verdict.outcome is RefreshOutcome.EXTENDED and _notices(core) == ["token_refreshed"]
    assert not core.token_expired(100.0)  # past the old expiry: still alive
    assert not core.token_expired(159.9) and core.closing is None
    assert core.token_expired(160.0)
    assert core.closing == TOKEN_EXPIRED


def test_a_refused_or_older_token_leaves_the_expiry_where_it_was() -> None:
    core = _session(expires_at=100.0)
    core.refresh("alice", Identity("bob", {"sub": "bob", "exp": 500}), now=0.0)
    assert _notices(core) == ["refresh_refused: user_mismatch"]
    core.refresh("alice", TokenRefused("expired"), now=0.0)
    assert _notices(core) == ["refresh_refused: expired"]
    core.refresh("alice", Identity("alice", {"sub": "alice", "exp": 50}), now=0.0)
    assert _notices(core) == ["token_refreshed"]
    assert not core.token_expired(99.0)  # not shortened to 50 either
    assert core.token_expired(100.0) and core.closing == TOKEN_EXPIRED
