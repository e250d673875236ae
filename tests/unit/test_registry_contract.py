"""One contract, two registries: memory (unit tests) and Redis (real fleets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.conftest import RedisProcess
from wsfleet.registry import PodRecord, PodState, Registry, RegistryUnavailable
from wsfleet.registry.memory import MemoryRegistry
from wsfleet.registry.redis_registry import RedisRegistry


def _pod(pod_id: str, pool: str = "gateways", state: PodState = PodState.SERVING) -> PodRecord:
    return PodRecord(pod_id, pool, "127.0.0.1", 9000, 9001, state=state, started_at=1.0)


@pytest_asyncio.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry()
        return
    server: RedisProcess = request.getfixturevalue("redis_server")
    store = RedisRegistry(server.url, namespace="contract")
    yield store
    await store.close()


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


async def test_a_pod_not_refreshed_within_its_ttl_expires(registry: Registry) -> None:
    await registry.put_pod(_pod("a"), ttl_s=0.2)
    await registry.put_pod(_pod("b"), ttl_s=10)
    await asyncio.sleep(0.3)
    assert [p.pod_id for p in await registry.list_pods()] == ["b"]


async def test_joins_state_changes_and_leaves_are_announced(registry: Registry) -> None:
    seen: list[str] = []

    async def listen() -> None:
        async for pod_id in registry.membership_changes():
            seen.append(pod_id)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)  # subscribed
    await registry.put_pod(_pod("a"), ttl_s=10)
    await registry.put_pod(_pod("a"), ttl_s=10)  # a refresh is not news
    await registry.put_pod(_pod("a", state=PodState.DRAINING), ttl_s=10)
    await registry.remove_pod("a")
    for _ in range(50):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.02)
    listener.cancel()
    assert seen == ["a", "a", "a"]


async def test_an_unreachable_redis_raises_registry_unavailable(redis_server: RedisProcess) -> None:
    store = RedisRegistry(redis_server.url)
    redis_server.stop()
    with pytest.raises(RegistryUnavailable):
        await store.ping()
    with pytest.raises(RegistryUnavailable):
        await store.list_pods()
    await store.close()


async def test_a_pod_can_be_read_alone_and_presence_checked_cheaply(registry: Registry) -> None:
    await registry.put_pod(_pod("a"), ttl_s=10)
    await registry.put_pod(_pod("b"), ttl_s=0.2)
    assert await registry.get_pod("a") == _pod("a")
    assert await registry.get_pod("nope") is None
    await asyncio.sleep(0.3)
    assert await registry.live_pod_ids() == {"a"}
    assert await registry.get_pod("b") is None
