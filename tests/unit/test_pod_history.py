"""The control plane remembers pods that left, bounded in count and age."""

from __future__ import annotations

from xds_server.membership import Endpoint
from xds_server.pod_history import PodHistory


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pods(*ids: str) -> dict[str, tuple[Endpoint, ...]]:
    return {
        "gateways": tuple(
            Endpoint(pod_id, "127.0.0.1", 1000 + n, False, "local", "local-a")
            for n, pod_id in enumerate(ids)
        )
    }


def test_a_pod_that_leaves_is_reported_gone_with_when_and_where() -> None:
    clock = FakeClock()
    history = PodHistory(clock=clock)
    history.observe(_pods("a", "b"))
    assert history.gone() == []
    clock.now += 5
    history.observe(_pods("a"))
    [gone] = history.gone()
    assert (gone.endpoint.pod_id, gone.pool, gone.gone_at) == ("b", "gateways", 1005.0)


def test_a_pod_that_comes_back_is_not_gone() -> None:
    history = PodHistory(clock=FakeClock())
    history.observe(_pods("a", "b"))
    history.observe(_pods("a"))
    history.observe(_pods("a", "b"))
    assert history.gone() == []


def test_gone_pods_are_forgotten_after_keep_s_and_beyond_keep() -> None:
    clock = FakeClock()
    history = PodHistory(keep=3, keep_s=60, clock=clock)
    ids = [f"p{n}" for n in range(6)]
    history.observe(_pods(*ids))
    for n in range(6):  # one leaves per second
        clock.now += 1
        history.observe(_pods(*ids[n + 1 :]))
    assert [g.endpoint.pod_id for g in history.gone()] == ["p5", "p4", "p3"]  # newest first
    clock.now += 58.5
    assert [g.endpoint.pod_id for g in history.gone()] == ["p5", "p4"]
    clock.now += 10
    assert history.gone() == []
