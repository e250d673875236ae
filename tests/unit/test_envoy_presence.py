"""Every control-plane replica knows every Envoy: each publishes the Envoys streaming from
it (bounded), and merges the others' with its own ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import wait_for
from wsfleet.registry import EnvoyPresence
from wsfleet.registry.base import MAX_PRESENCE_CHARS
from wsfleet.registry.memory import MemoryRegistry
from xds_server.edge_drains import EdgeDrains, fleet_envoys, presence_of
from xds_server.edge_routes import EdgeRoutes
from xds_server.ledger import Ledger, NodeStatus
from xds_server.snapshot_cache import SnapshotCache


def _status(node: str, zone: str = "zone-1", connected: bool = True, at: float = 5.0) -> NodeStatus:
    return NodeStatus(node, "g", "sotw", "1.40.0", at, at, connected, "eu", zone)


def _presence(node: str, replica: str, at: float = 5.0, zone: str = "zone-2") -> EnvoyPresence:
    return EnvoyPresence(node, zone, "eu", "1.40.0", at, replica, 9.0)


def test_a_replica_publishes_only_its_connected_envoys_with_fields_cut_to_the_bound() -> None:
    long_zone = _status("e2", zone="z" * (MAX_PRESENCE_CHARS + 50))
    published = presence_of(
        [_status("e1"), long_zone, _status("gone", connected=False), _status("n" * 129)],
        "xds-a",
        now=42.0,
    )
    assert [(p.node, p.replica, p.seen_at) for p in published] == [
        ("e1", "xds-a", 42.0),
        ("e2", "xds-a", 42.0),
    ]
    assert len(published[1].zone) == MAX_PRESENCE_CHARS


def test_the_fleet_view_merges_the_ledger_with_the_other_replicas_envoys() -> None:
    own = [_status("here"), _status("left", connected=False, at=1.0)]
    others = [
        _presence("there", "xds-b"),
        _presence("left", "xds-b", at=3.0),  # reconnected elsewhere: wins over "gone here"
        _presence("here", "xds-b", at=9.0),  # a stale claim: this replica serves it
        _presence("twice", "xds-b", at=1.0),
        _presence("twice", "xds-c", at=2.0),  # the newer stream wins
    ]
    view = fleet_envoys(own, others, "xds-a")
    assert {node: (e["replica"], e["connected"]) for node, e in view.items()} == {
        "here": ("xds-a", True),
        "left": ("xds-b", True),
        "there": ("xds-b", True),
        "twice": ("xds-c", True),
    }
    assert view["there"]["zone"] == "zone-2"
    alone = fleet_envoys([_status("left", connected=False)], [], "xds-a")
    assert alone["left"]["connected"] is False


async def _no_pod_call(*_: Any) -> tuple[int, Any]:
    return 200, {}


def _replica(registry: MemoryRegistry, ledger: Ledger, name: str) -> EdgeDrains:
    return EdgeDrains(registry, ledger, EdgeRoutes(), SnapshotCache(), _no_pod_call, replica=name)


async def test_a_replica_can_drain_an_envoy_streaming_from_another() -> None:
    registry = MemoryRegistry()
    ledger_a, ledger_b = Ledger(), Ledger()
    a, b = _replica(registry, ledger_a, "xds-a"), _replica(registry, ledger_b, "xds-b")
    ledger_a.open("envoy-1", "g", "sotw", "1.40.0", 5.0, ("eu", "zone-1"))
    await a.publish()
    await b.sync()
    assert b._select({"node": "envoy-1"}) == [("envoy-1", "zone-1")]
    assert b._select({"zone": "zone-1"}) == [("envoy-1", "zone-1")]
    unknown = b._select({"node": "envoy-9"})
    assert not isinstance(unknown, list) and unknown.status == 404


class _CountedRegistry(MemoryRegistry):
    """Counts the replicas' publications (so a test can wait for the first one)."""

    def __init__(self) -> None:
        super().__init__()
        self.publications = 0

    async def put_envoys(self, replica: str, envoys: list[EnvoyPresence], ttl_s: float) -> None:
        self.publications += 1
        await super().put_envoys(replica, envoys, ttl_s)


async def test_a_connect_is_published_without_waiting_for_the_poll() -> None:
    registry = _CountedRegistry()
    ledger = Ledger()
    replica = _replica(registry, ledger, "xds-a")
    runner = asyncio.create_task(replica.run(poll_s=60.0))
    try:

        async def first_publication_done() -> bool:  # with nothing connected yet
            return registry.publications >= 1

        await wait_for(first_publication_done, 10)
        ledger.open("envoy-1", "g", "sotw", "1.40.0", 5.0, ("eu", "zone-1"))

        async def listed() -> list[str]:
            return [e.node for e in await registry.envoys()]

        async def published() -> bool:
            return await listed() == ["envoy-1"]

        async def forgotten() -> bool:
            return await listed() == []

        await wait_for(published, 10)  # not the 60 s poll
        status = ledger.get("envoy-1")
        assert status is not None
        ledger.close(status)
        await wait_for(forgotten, 10)
    finally:
        runner.cancel()
