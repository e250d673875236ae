"""A long-poll session closed between polls keeps its close frame for the client's next
poll: for its own user only, once, for a bounded time and a bounded number of sessions."""

from __future__ import annotations

import pytest

from sidecar.core.poll_closes import PollCloses


def test_the_next_poll_of_the_same_user_gets_the_close_once() -> None:
    closes = PollCloses(keep_s=60)
    closes.add("s1", "alice", 1008, "rate limit exceeded", now=0.0)
    assert closes.holds("s1", now=1.0) and not closes.holds("s9", now=1.0)
    assert closes.take("s1", "mallory", now=1.0) is None  # not hers
    assert closes.take("s1", "alice", now=1.0) == (1008, "rate limit exceeded")
    assert closes.take("s1", "alice", now=1.0) is None


def test_a_close_is_kept_for_the_poll_timeout_only() -> None:
    closes = PollCloses(keep_s=60)
    closes.add("s1", "alice", 1013, "slow consumer", now=0.0)
    closes.add("s2", "bob", 1012, "draining", now=30.0)
    assert not closes.holds("s1", now=60.0)
    assert closes.take("s1", "alice", now=60.0) is None
    assert len(closes) == 1
    assert closes.take("s2", "bob", now=89.0) == (1012, "draining")


def test_the_oldest_closes_go_first_past_the_bound() -> None:
    closes = PollCloses(keep_s=60, max_entries=3)
    for n in range(5):
        closes.add(f"s{n}", "alice", 4001, "moderated", now=float(n))
    assert len(closes) == 3
    assert closes.take("s1", "alice", now=5.0) is None
    assert closes.take("s4", "alice", now=5.0) == (4001, "moderated")


def test_a_bound_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        PollCloses(keep_s=0)
