"""An Envoy drain's pure parts (state, budget left, input bounds) and the pod side: an
order closes exactly the connections that came through that Envoy, with 1012 and a
retry hint, once per order, a bounded number at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sidecar.connection_table import ConnectionTable
from sidecar.core import HeartbeatPolicy
from sidecar.edge_drain import MAX_RUNNING, EdgeDrainer, edge_of
from sidecar.metrics import GatewayMetrics
from sidecar.session_registry import SessionRegistry
from wsfleet.registry import EdgeDrain
from xds_server.edge_drains import budget_left, drain_id, drain_state, parse_seconds

DRAIN = EdgeDrain("envoy-2", "zone-2", budget_s=10.0, delist_s=2.0, started_at=1000.0)


def test_a_drain_delists_then_closes_then_is_drained() -> None:
    assert drain_state(DRAIN, 1001.9, remaining=5) == "delisting"
    assert drain_state(DRAIN, 1002.0, remaining=5) == "closing"
    assert drain_state(DRAIN, 1002.0, remaining=0) == "drained"


def test_the_budget_starts_after_delisting_and_runs_out() -> None:
    assert budget_left(DRAIN, 1000.0) == 10.0
    assert budget_left(DRAIN, 1007.0) == 5.0
    assert budget_left(DRAIN, 1100.0) == 0.0


def test_a_later_drain_of_the_same_node_is_another_order() -> None:
    later = EdgeDrain("envoy-2", "zone-2", 10.0, 2.0, 1500.0)
    assert drain_id(DRAIN) != drain_id(later)


@pytest.mark.parametrize("value", [-1, 301, "3", True, None])
def test_seconds_out_of_bounds_or_not_numbers_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="delist_s"):
        parse_seconds({"delist_s": value}, "delist_s", 2.0, 300.0)
    assert parse_seconds({}, "delist_s", 2.0, 300.0) == 2.0


def test_only_an_edge_header_an_envoy_could_have_set_is_taken() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    def of(value: str) -> str:
        return edge_of(CIMultiDictProxy(CIMultiDict({"X-Wsfleet-Edge": value})))

    assert of("envoy-2") == "envoy-2"
    assert of("x" * 129) == ""
    assert of("bad\nvalue") == ""
    assert edge_of(CIMultiDictProxy(CIMultiDict())) == ""


@dataclass
class FakeConnection:
    connection_id: str
    table: ConnectionTable
    transport: str = "sse"
    user_id: str = "alice"
    closed_with: tuple[int, str] | None = None

    @property
    def session_id(self) -> str:
        return "s-" + self.connection_id

    def send_ping(self) -> None:
        return None

    def written_to(self) -> bool:
        return False

    def queued(self) -> tuple[int, int]:
        return 0, 0

    def idle_for(self, now: float) -> float:
        return 0.0

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.table.untrack(self, code)

    def abort(self) -> None:
        return None

    def expire_token(self, wall_now: float) -> bool:
        return False


class FakeSessions:
    def remove(self, connection_id: str) -> None:
        return None


def _table() -> ConnectionTable:
    sessions: SessionRegistry = FakeSessions()  # type: ignore[assignment]
    return ConnectionTable(HeartbeatPolicy(), GatewayMetrics(), sessions, 60.0)


async def test_an_order_closes_only_that_envoys_connections_once() -> None:
    table = _table()
    connections = {}
    for name, edge in [("a", "envoy-1"), ("b", "envoy-2"), ("c", "envoy-2"), ("d", "")]:
        connections[name] = FakeConnection(name, table)
        table.track(connections[name])
        table.set_edge(name, edge)
    table.set_edge("gone", "envoy-2")  # not tracked: not recorded
    assert sorted(c.connection_id for c in table.of_edge("envoy-2")) == ["b", "c"]

    drainer = EdgeDrainer(table, retry_hint_ms=400)
    assert drainer.start("envoy-2@1", "envoy-2", budget_s=0.0) is True
    assert drainer.start("envoy-2@1", "envoy-2", budget_s=0.0) is False  # repeated: no-op
    await _until(lambda: drainer.progress("envoy-2")["open"] == 0)
    for name in ("b", "c"):
        closed = connections[name].closed_with
        assert closed is not None and closed[0] == 1012 and "retry_after_ms=" in closed[1]
    assert connections["a"].closed_with is None and connections["d"].closed_with is None
    assert table.edges == {"a": "envoy-1"}  # untracked connections leave the edge map
    await asyncio.wait_for(
        _until(lambda: (drainer.progress("envoy-2")["drain"] or {}).get("state") == "drained"), 5
    )


async def test_at_most_so_many_envoy_drains_run_at_once() -> None:
    table = _table()
    slow = FakeConnection("x", table)
    table.track(slow)
    drainer = EdgeDrainer(table)
    for n in range(MAX_RUNNING):
        table.set_edge("x", f"envoy-{n}")
        drainer.start(f"d{n}", f"envoy-{n}", budget_s=60.0)
    with pytest.raises(OverflowError):
        drainer.start("one-more", "envoy-x", budget_s=60.0)
    await drainer.stop()


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not seen in 10 s")
