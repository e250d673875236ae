"""A real Redis Cluster from the embedded binary: formed without external tools, usable
with redis-py's cluster client, and a master's replica takes over when it dies."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as RedisClusterNode
from redis.asyncio.cluster import RedisCluster

from tests.helpers import wait_for
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.redis_cluster import HASH_SLOTS, slot_ranges, start_redis_cluster

pytestmark = pytest.mark.integration


def test_slots_are_split_evenly_and_completely() -> None:
    for masters in (1, 2, 3, 7):
        ranges = slot_ranges(masters)
        assert [slot for r in ranges for slot in r] == list(range(HASH_SLOTS))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(ValueError, match="at least one master"):
        slot_ranges(0)


async def test_a_three_master_cluster_serves_every_slot_and_survives_losing_a_master(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    try:
        nodes = await start_redis_cluster(supervisor, 3, tmp_path / "cluster", replicas=1)
        assert len(nodes) == 6 and sum(node.master is None for node in nodes) == 3
        cluster = RedisCluster(
            startup_nodes=[RedisClusterNode("127.0.0.1", node.port) for node in nodes],
            decode_responses=True,
        )
        try:
            keys = [f"key-{n}" for n in range(200)]  # spread over every master's slots
            owners = {cluster.keyslot(key) * 3 // HASH_SLOTS for key in keys}
            assert owners == {0, 1, 2}
            for key in keys:
                await cluster.set(key, key.upper())
            first = nodes[0]
            victim = aioredis.Redis(port=first.port)
            try:  # what the dying master acknowledged has reached its replica
                assert await victim.execute_command("WAIT", 1, 5000) == 1
            finally:
                await victim.aclose()
            await first.child.stop(5.0, signal.SIGKILL)

            async def replica_took_over() -> bool:
                try:
                    return all([await cluster.get(key) == key.upper() for key in keys])
                except Exception:  # the cluster is reconfiguring: ask again
                    return False

            await wait_for(replica_took_over, 30, interval_s=0.2)
            await cluster.set("after-failover", "yes")
            assert await cluster.get("after-failover") == "yes"
        finally:
            await cluster.aclose()
    finally:
        await supervisor.stop_all(5.0)


async def test_closing_a_client_closes_its_connections(redis_server) -> None:
    """A process that closes its Redis client leaves no connection open behind it (a
    client given a pool it does not own left them open until garbage collection)."""
    import redis as sync_redis

    from wsfleet.redis_client import connect

    observer = sync_redis.Redis(port=redis_server.port)
    try:
        baseline = len(observer.client_list())
        client = connect(redis_server.url, 4)
        await asyncio.gather(*(client.ping() for _ in range(4)))  # several connections
        assert len(observer.client_list()) > baseline
        await client.aclose()

        async def closed() -> bool:
            return len(observer.client_list()) == baseline

        await wait_for(closed, 10)
    finally:
        observer.close()
