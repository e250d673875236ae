"""One way to reach Redis, a single server or a Redis Cluster, from one URL.

- ``redis://host:port/db`` (``rediss://`` with TLS, ``unix://``): one server, through a
  bounded pool that makes a surge wait for a connection instead of opening hundreds;
- ``redis+cluster://host:port`` (``rediss+cluster://``): a Redis Cluster, discovered from
  that node (any node will do); commands go to the master of their key's slot.

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
from redis.asyncio.cluster import RedisCluster

AnyRedis = aioredis.Redis | RedisCluster
T = TypeVar("T")

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *_CLUSTER_SCHEMES)
CLUSTER_CONNECTIONS_PER_NODE = 512  # the cluster client refuses, not waits, past this


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in _CLUSTER_SCHEMES


def connect(url: str, max_connections: int, decode_responses: bool = False) -> AnyRedis:
    """A client for ``url`` (see the module's docstring). Connects lazily."""
    scheme, _, rest = url.partition("://")
    timeouts = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
    if scheme in _CLUSTER_SCHEMES:
        return RedisCluster.from_url(
            f"{_CLUSTER_SCHEMES[scheme]}://{rest}",
            max_connections=max(max_connections, CLUSTER_CONNECTIONS_PER_NODE),
            decode_responses=decode_responses,
            **timeouts,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5.0,
        decode_responses=decode_responses,
        **timeouts,
    )
    return aioredis.Redis(connection_pool=pool)


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
