"""The Python SDK's reconnect delays: full jitter, capped, honouring hints, never in step."""

from __future__ import annotations

import random
import statistics

import pytest

from wsfleet_client import Backoff, connect_url


def test_delays_grow_as_a_window_but_each_is_uniform_inside_it() -> None:
    backoff = Backoff(base_s=0.1, cap_s=10.0, rng=random.Random(1))
    windows = []
    for _ in range(12):
        windows.append(backoff.window())
        delay = backoff.next_delay()
        assert delay is not None and 0 <= delay <= windows[-1]
    assert windows[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert windows[-1] == 10.0  # capped


def test_at_the_cap_delays_stay_spread_over_the_whole_window() -> None:
    delays = []
    for seed in range(2000):
        backoff = Backoff(base_s=0.1, cap_s=5.0, rng=random.Random(seed))
        backoff.attempt = 20  # long past the cap
        delay = backoff.next_delay()
        assert delay is not None
        delays.append(delay)
    assert 0 <= min(delays) < 0.1 and 4.9 < max(delays) <= 5.0
    assert statistics.fmean(delays) == pytest.approx(2.5, abs=0.15)  # uniform: mean = cap/2
    deciles = [sum(1 for d in delays if k * 0.5 <= d < (k + 1) * 0.5) for k in range(10)]
    assert min(deciles) > 150  # every tenth of the window is used (~200 each)


def test_clients_that_lose_their_pod_together_do_not_retry_together() -> None:
    """1000 clients, same moment, same policy: their first retries are spread out."""
    first = []
    for seed in range(1000):
        backoff = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(seed))
        first.append(backoff.next_delay())
    buckets = [
        sum(1 for d in first if d is not None and k / 10 <= d < (k + 1) / 10) for k in range(10)
    ]
    assert max(buckets) / (1000 / 10) < 1.5  # peak-to-mean of retries per 100 ms


def test_a_server_hint_is_a_floor_plus_jitter() -> None:
    backoff = Backoff(base_s=0.2, cap_s=2.0, rng=random.Random(3))
    delays = [backoff.next_delay(hint_s=1.5) for _ in range(50)]
    assert all(d is not None and 1.5 <= d <= 1.5 + 1.0 for d in delays)


def test_the_time_budget_ends_the_retries() -> None:
    backoff = Backoff(base_s=1.0, cap_s=1.0, max_elapsed_s=5.0, rng=random.Random(4))
    total = 0.0
    while (delay := backoff.next_delay()) is not None:
        total += delay
    assert total <= 5.0
    backoff.reset()
    assert backoff.next_delay() is not None


def test_nonsense_backoff_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=2, cap_s=1)


def test_connect_url_adds_the_routing_user() -> None:
    assert connect_url("ws://h:1/ws", "a b") == "ws://h:1/ws?user=a+b"
    assert connect_url("ws://h:1/ws?x=1", "u") == "ws://h:1/ws?x=1&user=u"
