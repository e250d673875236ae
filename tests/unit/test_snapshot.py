"""Snapshots: serialized once, versioned by content only (replicas and restarts agree)."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from xds_server import envoy_types, wire
from xds_server import type_urls as T
from xds_server.snapshot import build_snapshot
from xds_server.snapshot_cache import SnapshotCache


def _clusters(*names: str) -> dict[str, dict[str, dict[str, object]]]:
    return {
        T.CLUSTER: {name: {"name": name, "type": "EDS", "connect_timeout": "2s"} for name in names}
    }


def test_an_unchanged_rebuild_keeps_versions_and_reuses_the_bytes() -> None:
    first = build_snapshot(_clusters("a", "b"), None)
    second = build_snapshot(_clusters("a", "b"), first)
    assert second.of(T.CLUSTER) is first.of(T.CLUSTER)


def test_a_changed_resource_changes_only_its_own_version() -> None:
    first = build_snapshot(_clusters("a", "b"), None)
    specs = _clusters("a", "b")
    specs[T.CLUSTER]["b"]["connect_timeout"] = "3s"
    second = build_snapshot(specs, first)
    assert second.of(T.CLUSTER).resources["a"] is first.of(T.CLUSTER).resources["a"]
    assert second.of(T.CLUSTER).resources["b"].version != first.of(T.CLUSTER).resources["b"].version
    assert second.of(T.CLUSTER).version != first.of(T.CLUSTER).version


def test_the_body_is_the_protobuf_of_the_spec() -> None:
    snapshot = build_snapshot(_clusters("a"), None)
    decoded = envoy_types.decode(T.CLUSTER, snapshot.of(T.CLUSTER).resources["a"].body)
    assert decoded == {"name": "a", "type": "EDS", "connectTimeout": "2s"}


def test_replicas_and_restarts_agree_on_every_version() -> None:
    """Two control planes (or one before and after a restart) that build the same config
    on their own give it the same versions: an Envoy moving between them is sent nothing
    that did not change."""
    specs = _clusters("a", "b")
    one = build_snapshot(specs, None)
    other = build_snapshot(_clusters("a", "b"), None, {})  # its own interning, its own bytes
    assert one.of(T.CLUSTER).version == other.of(T.CLUSTER).version
    assert one.of(T.CLUSTER).content_key() == other.of(T.CLUSTER).content_key()
    changed = build_snapshot(_clusters("a", "c"), None)
    assert changed.of(T.CLUSTER).version != one.of(T.CLUSTER).version


@given(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6, unique=True))
def test_a_type_version_is_a_function_of_its_content(names: list[str]) -> None:
    forward = build_snapshot(_clusters(*names), None)
    backward = build_snapshot(_clusters(*reversed(names)), None)  # order does not matter
    assert forward.of(T.CLUSTER).version == backward.of(T.CLUSTER).version


def test_the_wire_envelope_parses_as_a_discovery_response() -> None:
    cluster = envoy_types.message_class("envoy.config.cluster.v3.Cluster")
    response = envoy_types.message_class("envoy.service.discovery.v3.DiscoveryResponse")

    snapshot = build_snapshot(_clusters("a", "b"), None)
    typed = snapshot.of(T.CLUSTER)
    raw = wire.discovery_response(
        typed.version, T.CLUSTER, "7", [r.body for r in typed.resources.values()]
    )
    parsed = response.FromString(raw)
    assert (parsed.version_info, parsed.nonce, parsed.type_url) == (typed.version, "7", T.CLUSTER)
    assert [any_.type_url for any_ in parsed.resources] == [T.CLUSTER, T.CLUSTER]
    assert [cluster.FromString(any_.value).name for any_ in parsed.resources] == ["a", "b"]


async def test_the_cache_wakes_waiters_and_falls_back_to_the_default_group() -> None:
    cache = SnapshotCache()
    waiter = asyncio.create_task(cache.wait_past(cache.generation))
    await asyncio.sleep(0)
    snapshot = build_snapshot(_clusters("a"), None)
    cache.set(snapshot)
    assert await asyncio.wait_for(waiter, 1) == 1
    assert cache.get("some-envoy-cluster") is snapshot


def test_load_assignments_assembled_endpoint_by_endpoint_equal_the_whole_message() -> None:
    from google.protobuf import json_format

    from xds_server.builders import ANY_REGION, load_assignment
    from xds_server.membership import Endpoint
    from xds_server.policy import Pool

    pool = Pool(name="gateways", locality_priority=["region-a", "region-b"])
    endpoints = tuple(
        Endpoint(f"pod-{n}", "127.0.0.1", 10_000 + n, n % 5 == 0, f"region-{'ab'[n % 2]}", "z1")
        for n in range(50)
    )
    spec = load_assignment(pool, endpoints, ANY_REGION)
    assembled = envoy_types.encode(T.ENDPOINT, spec)
    assignment = envoy_types.MESSAGE_TYPES[T.ENDPOINT]
    reference = json_format.ParseDict(spec, assignment(), descriptor_pool=envoy_types.POOL)
    assert assignment.FromString(assembled) == reference
    assert len(reference.endpoints) == 2 and reference.endpoints[0].lb_endpoints
    assert envoy_types.encode(T.ENDPOINT, spec) == assembled  # cached endpoints, same bytes
