"""What the control plane keeps per Envoy and per region is bounded, and follows the
Envoys connected, not every one ever seen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from xds_server import ledger as ledger_module
from xds_server import type_urls
from xds_server.ads_service import AdsService
from xds_server.envoy_types import DiscoveryRequest, message_class
from xds_server.ledger import Ledger
from xds_server.metrics import XdsMetrics
from xds_server.policy_loader import default_bundle
from xds_server.publisher import SnapshotPublisher
from xds_server.snapshot_cache import SnapshotCache

Node = message_class("envoy.config.core.v3.Node")
Locality = message_class("envoy.config.core.v3.Locality")


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)


def _service(max_groups: int) -> tuple[AdsService, SnapshotPublisher, SnapshotCache]:
    cache, metrics = SnapshotCache(), XdsMetrics()
    publisher = SnapshotPublisher(cache, metrics, default_bundle())
    publisher.publish()
    service = AdsService(
        cache,
        Ledger(),
        metrics,
        on_new_group=publisher.ensure_group,
        on_group_gone=publisher.forget_group,
        max_groups=max_groups,
    )
    return service, publisher, cache


async def _open(
    service: AdsService, node_id: str, region: str, hold: asyncio.Event
) -> tuple[asyncio.Task[Any], FakeContext, asyncio.Event]:
    first_reply = asyncio.Event()
    context = FakeContext()

    async def requests() -> AsyncIterator[Any]:
        node = Node(id=node_id, cluster="t", locality=Locality(region=region))
        yield DiscoveryRequest(type_url=type_urls.CLUSTER, node=node)
        await hold.wait()

    async def run() -> None:
        async for _ in service.stream_sotw(requests(), context):
            first_reply.set()

    return asyncio.ensure_future(run()), context, first_reply


async def test_regions_beyond_the_bound_are_refused_and_a_region_left_empty_is_forgotten() -> None:
    service, publisher, cache = _service(max_groups=2)
    hold = asyncio.Event()
    a, _, a_ready = await _open(service, "a-1", "region-a", hold)
    b, _, b_ready = await _open(service, "b-1", "region-b", hold)
    await asyncio.wait_for(asyncio.gather(a_ready.wait(), b_ready.wait()), 10)
    assert publisher.group_count == 3  # the default group, a, b
    c, c_context, _ = await _open(service, "c-1", "region-c", hold)
    with pytest.raises(Aborted):
        await asyncio.wait_for(c, 10)
    assert c_context.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert publisher.group_count == 2  # region-a's snapshot is gone with its last Envoy
    assert cache.get("region-a") is cache.get()  # its own is gone: the default answers
    c, _, c_ready = await _open(service, "c-1", "region-c", hold)
    await asyncio.wait_for(c_ready.wait(), 10)  # room again
    for task in (b, c):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert publisher.group_count == 1  # only the default group is left


def test_the_ledger_forgets_the_longest_gone_nodes_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_module, "MAX_NODES", 3)
    ledger = Ledger()
    first = ledger.open("n1", "g", "sotw", "", 0.0)
    ledger.open("n2", "g", "sotw", "", 0.0)
    ledger.close(first)
    ledger.open("n3", "g", "sotw", "", 0.0)
    ledger.open("n4", "g", "sotw", "", 0.0)
    assert [node.node_id for node in ledger.nodes()] == ["n2", "n3", "n4"]
    for node in ledger.nodes():  # connected nodes are never forgotten
        assert node.connected
    ledger.open("n5", "g", "sotw", "", 0.0)
    assert len(ledger.nodes()) == 4  # over the bound only while all are connected


def _node_with(metadata: dict[str, Any]) -> Any:
    value = message_class("google.protobuf.Value")
    node = Node(id="e", locality=Locality(region="eu"))
    for key, kind in metadata.items():
        node.metadata.fields[key].CopyFrom(value(**kind))
    return Node.FromString(node.SerializeToString())


def test_a_node_is_grouped_by_region_and_the_listener_port_it_asks_for() -> None:
    from xds_server.ads_service import LISTENER_PORT_KEY, node_group

    assert node_group(_node_with({})) == "eu"
    assert node_group(_node_with({LISTENER_PORT_KEY: {"number_value": 9001}})) == "eu@9001"
    for bad in ({"number_value": 0}, {"number_value": 70000}, {"number_value": 80.5}, {}):
        with pytest.raises(ValueError, match="must be a port"):
            node_group(_node_with({LISTENER_PORT_KEY: bad}))
    with pytest.raises(ValueError, match="must be a port"):
        node_group(_node_with({LISTENER_PORT_KEY: {"string_value": "9001"}}))
