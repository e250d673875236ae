"""One way to reach Redis, a single server or a Redis Cluster, from one URL.

- ``redis://host:port/db`` (``rediss://`` with TLS, ``unix://``): one server, through a
  bounded pool that makes a surge wait for a connection instead of opening hundreds;
- ``redis+cluster://[user:password@]host:port[,host:port…]`` (``rediss+cluster://``): a
  Redis Cluster, discovered from the first of those nodes that answers (list several: a
  process that starts while the only node it knows is down cannot find the others);
  commands go to the master of their key's slot.

On a cluster every script call and every multi-key command must touch keys of one hash
slot. The stores keep that by hash tags (``{…}`` in a key: only that part is hashed)
and by :func:`batches`, which groups a batch's items by slot before they share a call.
Pipelines are not transactions, so a pipeline may span slots: the cluster client sends
each node its share, one round trip per node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from wsfleet.redis_urls import CLUSTER_SCHEMES, cluster_address

AnyRedis = aioredis.Redis | RedisCluster
T = TypeVar("T")
# what a store catches: the cluster client's own errors are not RedisErrors
ERRORS = (RedisError, RedisClusterException, OSError)

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0
CLUSTER_CONNECTIONS_PER_NODE = 512  # the cluster client refuses, not waits, past this


def connect(url: str, max_connections: int, decode_responses: bool = False) -> AnyRedis:
    """A client for ``url`` (see the module's docstring). Connects lazily."""
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        username, password, nodes = cluster_address(rest)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            ssl=scheme == "rediss+cluster",
            max_connections=max(max_connections, CLUSTER_CONNECTIONS_PER_NODE),
            decode_responses=decode_responses,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5.0,
        decode_responses=decode_responses,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
    )
    # from_pool: the client owns its pool, so aclose() closes the pool's connections too
    # (a client given connection_pool= leaves them open until garbage collection)
    return aioredis.Redis.from_pool(pool)


def batches(
    items: Sequence[T], size: int, slot_tag: Callable[[T], str] | None
) -> Iterator[list[T]]:
    """``items`` in groups of at most ``size``, in order. With ``slot_tag`` (on a cluster)
    only items with the same tag share a group: their keys share a hash slot."""
    if slot_tag is None:
        for start in range(0, len(items), size):
            yield list(items[start : start + size])
        return
    by_tag: dict[str, list[T]] = {}
    for item in items:
        by_tag.setdefault(slot_tag(item), []).append(item)
    for group in by_tag.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]
