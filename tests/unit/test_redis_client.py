"""Redis URLs (one server or a cluster) and how batches are grouped for a cluster."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from wsfleet.redis_client import batches, connect
from wsfleet.redis_urls import checked_url, is_cluster_url


def test_server_and_cluster_urls_are_told_apart_and_bad_ones_refused() -> None:
    assert checked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert checked_url("rediss+cluster://u:p@a:7000,b:7001") == "rediss+cluster://u:p@a:7000,b:7001"
    assert is_cluster_url("redis+cluster://a:7000") and not is_cluster_url("redis://a:7000")
    with pytest.raises(ValueError, match="starts with one of"):
        checked_url("http://a:7000")
    with pytest.raises(ValueError, match="starts with one of"):
        checked_url("127.0.0.1:6379")
    with pytest.raises(ValueError, match="host:port"):
        checked_url("redis+cluster://a:7000,b")


async def test_a_cluster_url_seeds_the_client_with_every_node_it_lists() -> None:
    cluster = connect("redis+cluster://:secret@127.0.0.1:7000,[::1]:7001", max_connections=4)
    assert isinstance(cluster, RedisCluster)
    seeds = {(node.host, node.port) for node in cluster.nodes_manager.startup_nodes.values()}
    assert seeds == {("127.0.0.1", 7000), ("::1", 7001)}
    assert cluster.connection_kwargs["password"] == "secret"
    await cluster.aclose()
    server = connect("redis://127.0.0.1:6379/0", max_connections=4)
    assert isinstance(server, aioredis.Redis)
    await server.aclose()


def test_on_a_cluster_only_items_of_one_slot_share_a_call() -> None:
    items = ["a1", "b1", "a2", "a3", "b2"]
    assert list(batches(items, 2, None)) == [["a1", "b1"], ["a2", "a3"], ["b2"]]
    by_slot = list(batches(items, 2, lambda item: item[0]))
    assert by_slot == [["a1", "a2"], ["a3"], ["b1", "b2"]]
