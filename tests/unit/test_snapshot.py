"""Snapshots: serialized once, versioned by content, versions only grow."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from xds_server import envoy_types, wire
from xds_server import type_urls as T
from xds_server.envoy_types import DiscoveryRequest  # noqa: F401  (types registered)
from xds_server.snapshot import SnapshotCache, VersionClock, build_snapshot


def _clusters(*names: str) -> dict[str, dict[str, dict[str, object]]]:
    return {
        T.CLUSTER: {name: {"name": name, "type": "EDS", "connect_timeout": "2s"} for name in names}
    }


def test_an_unchanged_rebuild_keeps_versions_and_reuses_the_bytes() -> None:
    clock = VersionClock()
    first = build_snapshot(_clusters("a", "b"), None, clock)
    second = build_snapshot(_clusters("a", "b"), first, clock)
    assert second.of(T.CLUSTER) is first.of(T.CLUSTER)


def test_a_changed_resource_changes_only_its_own_version() -> None:
    clock = VersionClock()
    first = build_snapshot(_clusters("a", "b"), None, clock)
    specs = _clusters("a", "b")
    specs[T.CLUSTER]["b"]["connect_timeout"] = "3s"
    second = build_snapshot(specs, first, clock)
    assert second.of(T.CLUSTER).resources["a"] is first.of(T.CLUSTER).resources["a"]
    assert second.of(T.CLUSTER).resources["b"].version != first.of(T.CLUSTER).resources["b"].version
    assert second.of(T.CLUSTER).version > first.of(T.CLUSTER).version


def test_the_body_is_the_protobuf_of_the_spec() -> None:
    snapshot = build_snapshot(_clusters("a"), None, VersionClock())
    decoded = envoy_types.decode(T.CLUSTER, snapshot.of(T.CLUSTER).resources["a"].body)
    assert decoded == {"name": "a", "type": "EDS", "connectTimeout": "2s"}


def test_versions_grow_even_when_the_clock_stalls_or_a_restart_reuses_it() -> None:
    clock = VersionClock(now_ms=lambda: 1_000)
    assert clock.next("aaaa") < clock.next("bbbb") < clock.next("0000")


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=2, max_size=50))
def test_versions_are_strictly_increasing_for_any_clock(readings: list[int]) -> None:
    times = iter(readings)
    clock = VersionClock(now_ms=lambda: next(times))
    versions = [clock.next("ff") for _ in readings]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_the_wire_envelope_parses_as_a_discovery_response() -> None:
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse

    snapshot = build_snapshot(_clusters("a", "b"), None, VersionClock())
    typed = snapshot.of(T.CLUSTER)
    raw = wire.discovery_response(
        typed.version, T.CLUSTER, "7", [r.body for r in typed.resources.values()]
    )
    parsed = DiscoveryResponse.parse(raw)
    assert (parsed.version_info, parsed.nonce, parsed.type_url) == (typed.version, "7", T.CLUSTER)
    assert [any_.unpack().name for any_ in parsed.resources] == ["a", "b"]


async def test_the_cache_wakes_waiters_and_falls_back_to_the_default_group() -> None:
    cache = SnapshotCache()
    waiter = asyncio.create_task(cache.wait_past(cache.generation))
    await asyncio.sleep(0)
    snapshot = build_snapshot(_clusters("a"), None, VersionClock())
    cache.set(snapshot)
    assert await asyncio.wait_for(waiter, 1) == 1
    assert cache.get("some-envoy-cluster") is snapshot


def test_load_assignments_assembled_endpoint_by_endpoint_equal_betterprotos_encoding() -> None:
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment

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
    reference = bytes(ClusterLoadAssignment.from_dict(spec))
    assert ClusterLoadAssignment.parse(assembled) == ClusterLoadAssignment.parse(reference)
    assert envoy_types.encode(T.ENDPOINT, spec) == assembled  # cached endpoints, same bytes
