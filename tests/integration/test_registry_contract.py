"""One contract, two registries: memory (unit tests) and Redis (real fleets)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tests.conftest import RedisProcess
from tests.helpers import until
from wsfleet.registry import (
    ConnectionRecord,
    EdgeDrain,
    EnvoyPresence,
    HashSources,
    PodRecord,
    PodState,
    Registry,
    RegistryUnavailable,
    user_bucket,
)
from wsfleet.registry.base import MAX_ENVOYS, MAX_PRESENCE_CHARS, presences_from_json
from wsfleet.registry.memory import MemoryRegistry
from wsfleet.registry.redis_registry import RedisRegistry

pytestmark = pytest.mark.integration


def _pod(pod_id: str, pool: str = "gateways", state: PodState = PodState.SERVING) -> PodRecord:
    return PodRecord(pod_id, pool, "127.0.0.1", 9000, 9001, state=state, started_at=1.0)


EXPIRY_BOUND_S = 10.0  # how long a short TTL may take to be seen gone: a bound, not a measure
PassesUntil = Callable[[Callable[[], Awaitable[bool]], str], Awaitable[None]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_FAKE_CLOCK = pytest.StashKey[FakeClock]()


@pytest_asyncio.fixture(params=["memory", "redis", "redis-cluster"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    if request.param == "memory":
        clock = request.node.stash[_FAKE_CLOCK] = FakeClock()
        yield MemoryRegistry(clock=clock)
        return
    if request.param == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")
        url = server.url
    else:
        url = request.getfixturevalue("redis_cluster_url")
    store = RedisRegistry(url, namespace=f"contract-{request.node.name}")
    yield store
    await store.close()


@pytest.fixture
def passes_until(registry: Registry, request: pytest.FixtureRequest) -> PassesUntil:
    """Time passing until ``check`` holds: the memory registry's fake clock moves on in
    small steps; Redis expires keys on its own clock, polled. Either fails past the bound."""
    clock = request.node.stash.get(_FAKE_CLOCK, None)

    async def on_the_fake_clock(check: Callable[[], Awaitable[bool]], what: str) -> None:
        assert clock is not None
        for _ in range(int(EXPIRY_BOUND_S / 0.05)):
            if await check():
                return
            clock.now += 0.05
        raise TimeoutError(f"{what}: not seen in {EXPIRY_BOUND_S} s of the fake clock")

    async def in_real_time(check: Callable[[], Awaitable[bool]], what: str) -> None:
        await until(check, EXPIRY_BOUND_S, what)

    return on_the_fake_clock if clock is not None else in_real_time


async def test_a_registered_pod_is_listed_with_its_fields(registry: Registry) -> None:
    await registry.put_pod(_pod("a"), ttl_s=10)
    assert await registry.list_pods() == [_pod("a")]


async def test_pods_are_listed_by_id_and_filtered_by_pool(registry: Registry) -> None:
    for pod in (_pod("b"), _pod("a"), _pod("c", pool="other")):
        await registry.put_pod(pod, ttl_s=10)
    assert [p.pod_id for p in await registry.list_pods()] == ["a", "b", "c"]
    assert [p.pod_id for p in await registry.list_pods("gateways")] == ["a", "b"]


async def test_a_removed_pod_is_gone(registry: Registry) -> None:
    await registry.put_pod(_pod("a"), ttl_s=10)
    await registry.remove_pod("a")
    assert await registry.list_pods() == []


async def test_a_pod_not_refreshed_within_its_ttl_expires(
    registry: Registry, passes_until: PassesUntil
) -> None:
    await registry.put_pod(_pod("a"), ttl_s=0.2)
    await registry.put_pod(_pod("b"), ttl_s=30)

    async def only_b_listed() -> bool:
        return [p.pod_id for p in await registry.list_pods()] == ["b"]

    await passes_until(only_b_listed, "the pod past its TTL gone, the other listed")


async def test_joins_state_changes_and_leaves_are_announced(registry: Registry) -> None:
    seen: list[str] = []

    async def listen() -> None:
        async for pod_id in registry.membership_changes():
            seen.append(pod_id)

    listener = asyncio.create_task(listen())
    # subscribed once a probe pod's changes are heard (each toggle is news)
    states = [PodState.SERVING, PodState.DRAINING]
    for n in range(400):
        await registry.put_pod(_pod("probe", state=states[n % 2]), ttl_s=10)
        if await _heard(seen, "probe", 1, 0.05):
            break
    await registry.put_pod(_pod("a"), ttl_s=10)
    await registry.put_pod(_pod("a"), ttl_s=10)  # a refresh is not news
    await registry.put_pod(_pod("a", state=PodState.DRAINING), ttl_s=10)
    await registry.remove_pod("a")
    await registry.remove_pod("probe")  # after a's last change: heard after it, in order
    assert await _heard(seen, "probe", seen.count("probe") + 1, 30)
    listener.cancel()
    assert [pod_id for pod_id in seen if pod_id == "a"] == ["a", "a", "a"]


async def _heard(seen: list[str], pod_id: str, times: int, timeout_s: float) -> bool:
    """Whether ``pod_id`` has been announced ``times`` times within ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while seen.count(pod_id) < times:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_an_unreachable_redis_raises_registry_unavailable(redis_server: RedisProcess) -> None:
    store = RedisRegistry(redis_server.url)
    redis_server.stop()
    with pytest.raises(RegistryUnavailable):
        await store.ping()
    with pytest.raises(RegistryUnavailable):
        await store.list_pods()
    with pytest.raises(RegistryUnavailable):
        await store.hold_lease("fleet_metrics", "xds-a", ttl_s=30)
    await store.close()


async def test_a_pod_can_be_read_alone_and_presence_checked_cheaply(
    registry: Registry, passes_until: PassesUntil
) -> None:
    await registry.put_pod(_pod("a"), ttl_s=30)
    await registry.put_pod(_pod("b"), ttl_s=0.2)
    assert await registry.get_pod("a") == _pod("a")
    assert await registry.get_pod("nope") is None

    async def only_a_live() -> bool:
        return await registry.live_pod_ids() == {"a"}

    await passes_until(only_a_live, "only the pod within its TTL live")
    assert await registry.get_pod("b") is None


def _cid(name: str, user: str = "alice") -> str:
    """A connection id as the gateway makes them: it begins with its user's bucket."""
    return f"{user_bucket(user)}-{name}"


def _conn(name: str, user: str = "alice", pod: str = "p1") -> ConnectionRecord:
    return ConnectionRecord(_cid(name, user), user, pod, f"room-{user}", "websocket", 10.0)


def _names(records: list[ConnectionRecord]) -> list[str]:
    return sorted(record.connection_id.partition("-")[2] for record in records)


async def test_a_connection_is_recorded_and_found_by_id_user_and_pod(registry: Registry) -> None:
    records = [_conn("c1"), _conn("c2", pod="p2"), _conn("c3", user="bob")]
    assert await registry.add_connections(records, ttl_s=10, max_per_user=0) == set()
    assert await registry.get_connection(_cid("c1")) == _conn("c1")
    assert _names(await registry.connections_of_user("alice")) == ["c1", "c2"]
    assert _names(await registry.connections_of_pod("p1")) == ["c1", "c3"]
    await registry.remove_connections([_conn("c1")])
    assert await registry.get_connection(_cid("c1")) is None
    assert _names(await registry.connections_of_user("alice")) == ["c2"]


async def test_a_connections_fields_come_back_as_written_whatever_text_they_hold(
    registry: Registry,
) -> None:
    user = "zoë:12:ünïcode,"  # not ASCII, and what the batch's length prefixes look like
    written = [
        ConnectionRecord(_cid("c1", user), user, "p1", "2:ab", "websocket", 10.5, 3.25),
        ConnectionRecord(_cid("c2", user), user, "p1", "", "sse", 11.0),  # empty routing key
    ]
    assert await registry.add_connections(written, ttl_s=10, max_per_user=0) == set()
    assert [await registry.get_connection(r.connection_id) for r in written] == written


async def test_the_per_user_quota_refuses_past_the_maximum_in_order(registry: Registry) -> None:
    batch = [_conn(f"c{n}", pod=f"p{n}") for n in range(3)]
    assert await registry.add_connections(batch, ttl_s=10, max_per_user=3) == set()
    # one batch, checked in order: alice is full, bob is not
    assert await registry.add_connections(
        [_conn("c9"), _conn("b1", user="bob"), _conn("c10")], ttl_s=10, max_per_user=3
    ) == {_cid("c9"), _cid("c10")}
    assert await registry.get_connection(_cid("c9")) is None
    await registry.remove_connections([_conn("c0", pod="p0")])
    assert await registry.add_connections([_conn("c9"), _conn("c11")], 10, max_per_user=3) == {
        _cid("c11")
    }


async def test_without_a_quota_nothing_is_refused(registry: Registry) -> None:
    records = [_conn(f"c{n}") for n in range(50)]
    assert await registry.add_connections(records, ttl_s=10, max_per_user=0) == set()
    assert len(await registry.connections_of_user("alice")) == 50


async def test_expired_connections_stop_counting_against_the_quota(
    registry: Registry, passes_until: PassesUntil
) -> None:
    await registry.add_connections([_conn("old")], ttl_s=0.2, max_per_user=1)

    async def old_expired() -> bool:
        return await registry.get_connection(_cid("old")) is None

    await passes_until(old_expired, "the connection past its TTL gone")
    assert await registry.add_connections([_conn("new")], ttl_s=10, max_per_user=1) == set()
    assert _names(await registry.connections_of_user("alice")) == ["new"]


async def test_touching_refreshes_last_ping_and_keeps_connections_alive(
    registry: Registry, passes_until: PassesUntil
) -> None:
    await registry.add_connections([_conn("c1"), _conn("c2")], ttl_s=0.3, max_per_user=0)
    for step in range(3):
        touched = dataclasses.replace(_conn("c1"), last_ping=100.0 + step)
        await registry.touch_connections([touched], ttl_s=30)

    async def untouched_expired() -> bool:
        return await registry.get_connection(_cid("c2")) is None

    await passes_until(untouched_expired, "the untouched connection past its first TTL gone")
    record = await registry.get_connection(_cid("c1"))  # touched: its TTL is 30 s now
    assert record is not None and record.last_ping == 102.0


async def test_put_connections_rewrites_a_pods_whole_set(registry: Registry) -> None:
    records = [_conn(f"c{n}", user=f"u{n}") for n in range(5)]
    await registry.put_connections(records, ttl_s=10)
    by_id = sorted(records, key=lambda record: record.connection_id)
    assert await registry.connections_of_pod("p1") == by_id


async def test_connections_are_recorded_after_redis_forgets_its_scripts(
    redis_server: RedisProcess,
) -> None:
    import redis.asyncio as aioredis

    store = RedisRegistry(redis_server.url, namespace="contract")
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await store.add_connections([_conn("c1")], 10, max_per_user=1) == set()
        await admin.script_flush()  # what a restarted or failed-over Redis looks like
        assert await store.hold_lease("fleet_metrics", "xds-a", ttl_s=10)
        assert await store.add_connections([_conn("c2")], 10, max_per_user=1) == {_cid("c2")}
        assert await store.add_connections([_conn("c3", user="bob")], 10, 1) == set()
    finally:
        await admin.aclose()
        await store.close()


async def test_the_channel_config_is_kept_as_written(registry: Registry) -> None:
    assert await registry.get_channel_config() is None  # until the control plane says
    await registry.put_channel_config('{"defaults": {}}')
    await registry.put_channel_config('{"namespaces": []}')
    assert await registry.get_channel_config() == '{"namespaces": []}'


async def test_hash_sources_are_kept_per_pool_and_replaced_whole(registry: Registry) -> None:
    assert await registry.get_hash_sources("gateways") is None  # until the control plane says
    await registry.put_hash_sources(
        {"gateways": HashSources(header="x-user-id", query_parameter="user"), "blue": HashSources()}
    )
    assert await registry.get_hash_sources("gateways") == HashSources("x-user-id", "user", None)
    await registry.put_hash_sources({"gateways": HashSources(cookie="uid")})
    assert await registry.get_hash_sources("gateways") == HashSources(None, None, "uid")
    assert await registry.get_hash_sources("blue") == HashSources()
    assert await registry.get_hash_sources("green") is None


@pytest.mark.parametrize(
    "text", ["[]", "{", '{"header": 3}', '{"header": "h", "extra": "x"}', '"x-user-id"']
)
def test_hash_sources_that_are_not_what_a_control_plane_writes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        HashSources.from_json(text)
    assert HashSources.from_json(HashSources("h", "q", "c").to_json()) == HashSources("h", "q", "c")


async def test_edge_drains_are_kept_per_node_until_removed(registry: Registry) -> None:
    assert await registry.edge_drains() == {}
    first = EdgeDrain("envoy-2", "zone-2", 30.0, 2.0, 1000.0)
    await registry.put_edge_drain(first)
    await registry.put_edge_drain(EdgeDrain("envoy-3", "zone-3", 5.0, 0.0, 1001.5))
    again = EdgeDrain("envoy-2", "zone-2", 10.0, 1.0, 1002.0)
    await registry.put_edge_drain(again)  # replaces the node's earlier drain
    drains = await registry.edge_drains()
    assert drains == {"envoy-2": again, "envoy-3": EdgeDrain("envoy-3", "zone-3", 5.0, 0.0, 1001.5)}
    assert await registry.remove_edge_drain("envoy-2") is True
    assert await registry.remove_edge_drain("envoy-2") is False
    assert set(await registry.edge_drains()) == {"envoy-3"}


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"node": "a"}',
        '{"node": 1, "zone": "z", "budget_s": 1, "delist_s": 1, "started_at": 1}',
        '{"node": "a", "zone": "z", "budget_s": true, "delist_s": 1, "started_at": 1}',
    ],
)
def test_edge_drains_that_are_not_what_a_control_plane_writes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        EdgeDrain.from_json(text)
    drain = EdgeDrain("envoy-1", "zone-1", 3.0, 2.0, 17.5)
    assert EdgeDrain.from_json(drain.to_json()) == drain


def _envoy(node: str, replica: str, zone: str = "zone-1", seen_at: float = 50.0) -> EnvoyPresence:
    return EnvoyPresence(node, zone, "eu", "1.40.0", 10.0, replica, seen_at)


async def test_each_replica_publishes_its_envoys_whole_and_readers_see_them_all(
    registry: Registry,
) -> None:
    assert await registry.envoys() == []
    await registry.put_envoys("xds-b", [_envoy("e3", "xds-b")], ttl_s=10)
    await registry.put_envoys("xds-a", [_envoy("e2", "xds-a"), _envoy("e1", "xds-a")], ttl_s=10)
    assert await registry.envoys() == [
        _envoy("e1", "xds-a"),
        _envoy("e2", "xds-a"),
        _envoy("e3", "xds-b"),
    ]
    again = _envoy("e2", "xds-a", seen_at=60.0)
    await registry.put_envoys("xds-a", [again], ttl_s=10)  # e1 went away
    assert await registry.envoys() == [again, _envoy("e3", "xds-b")]
    await registry.put_envoys("xds-b", [], ttl_s=10)  # a replica stopping: forgotten at once
    assert await registry.envoys() == [again]


async def test_envoys_a_replica_stops_publishing_expire(
    registry: Registry, passes_until: PassesUntil
) -> None:
    await registry.put_envoys("gone", [_envoy("e1", "gone")], ttl_s=0.2)
    await registry.put_envoys("live", [_envoy("e2", "live")], ttl_s=30)

    async def only_live() -> bool:
        return [e.node for e in await registry.envoys()] == ["e2"]

    await passes_until(only_live, "the silent replica's Envoys gone")


async def test_envoy_presence_expires_on_the_memory_registrys_clock() -> None:
    now = [100.0]
    registry = MemoryRegistry(clock=lambda: now[0])
    await registry.put_envoys("xds-a", [_envoy("e1", "xds-a")], ttl_s=15)
    now[0] = 114.9
    assert [e.node for e in await registry.envoys()] == ["e1"]
    now[0] = 115.0
    assert await registry.envoys() == []


async def test_envoy_presence_is_bounded_and_records_not_a_replicas_own_are_skipped(
    registry: Registry,
) -> None:
    many = [_envoy(f"e{n:05d}", "xds-a") for n in range(MAX_ENVOYS + 5)]
    foreign = _envoy("spoof", "xds-b")  # a record naming another replica than its writer
    await registry.put_envoys("xds-a", [*many[:3], foreign], ttl_s=10)
    assert [e.node for e in await registry.envoys()] == ["e00000", "e00001", "e00002"]
    await registry.put_envoys("xds-a", many, ttl_s=10)
    await registry.put_envoys("xds-b", [_envoy("e-b", "xds-b")], ttl_s=10)
    listed = await registry.envoys()
    assert len(listed) == MAX_ENVOYS and listed[-1].node == f"e{MAX_ENVOYS - 1:05d}"


@pytest.mark.parametrize(
    "fields",
    [
        [],
        {"node": "a"},
        {**_envoy("a", "r").to_plain(), "node": 1},
        {**_envoy("a", "r").to_plain(), "seen_at": True},
        {**_envoy("a", "r").to_plain(), "zone": "z" * (MAX_PRESENCE_CHARS + 1)},
        {**_envoy("a", "r").to_plain(), "extra": "x"},
    ],
)
def test_envoy_presences_that_are_not_what_a_control_plane_writes_are_refused(
    fields: object,
) -> None:
    with pytest.raises(ValueError):
        EnvoyPresence.from_plain(fields)
    envoy = _envoy("envoy-1", "xds-a")
    assert EnvoyPresence.from_plain(envoy.to_plain()) == envoy
    assert presences_from_json(f"[{json.dumps(fields)}, 7]", "r") == []
    assert presences_from_json("{", "r") == []


async def test_a_lease_is_taken_when_free_kept_by_its_holder_and_refused_to_another(
    registry: Registry, passes_until: PassesUntil
) -> None:
    assert await registry.hold_lease("fleet_metrics", "xds-a", ttl_s=0.2)  # free: taken
    assert await registry.hold_lease("fleet_metrics", "xds-a", ttl_s=30)  # kept, TTL anew
    assert not await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=30)
    assert await registry.hold_lease("other", "xds-b", ttl_s=0.2)  # leases apart by name

    async def other_taken_by_c() -> bool:
        return await registry.hold_lease("other", "xds-c", ttl_s=30)

    await passes_until(other_taken_by_c, "the lease its holder stopped keeping, taken")
    # past the first TTL: the refresh is what kept it
    assert not await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=30)
    assert not await registry.hold_lease("other", "xds-b", ttl_s=30)  # now c's


async def test_a_lease_without_a_name_a_holder_or_a_positive_ttl_is_refused(
    registry: Registry,
) -> None:
    bad_ttls = [("fleet_metrics", "xds-a", t) for t in (0.0, -1.0, float("nan"), float("inf"))]
    for name, holder, ttl_s in [("", "xds-a", 30.0), ("fleet_metrics", "", 30.0), *bad_ttls]:
        with pytest.raises(ValueError):
            await registry.hold_lease(name, holder, ttl_s)
    assert await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=30)  # nothing taken
