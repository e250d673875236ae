"""Redis URLs, read without importing the Redis client (settings check them at start, and
every command line builds its settings): ``redis://``, ``rediss://``, ``unix://`` for one
server, ``redis+cluster://`` and ``rediss+cluster://`` for a Redis Cluster (see
:mod:`wsfleet.redis_client`)."""

from __future__ import annotations

from urllib.parse import unquote

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def checked_url(url: str) -> str:
    """``url`` if it names a Redis or a Redis Cluster this project can reach, else
    ValueError saying what is wrong (settings check it once, at start)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in SCHEMES:
        raise ValueError(f"a Redis URL starts with one of {', '.join(SCHEMES)}://")
    if scheme in CLUSTER_SCHEMES:
        cluster_address(rest)
    return url


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def cluster_address(rest: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """What follows ``redis+cluster://``: (user, password, the seed nodes as host, port);
    ValueError for a node that is not host:port."""
    userinfo, _, hosts = rest.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = [_node(address) for address in hosts.split("/")[0].split(",")]
    return unquote(username) or None, unquote(password) or None, nodes


def _node(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a cluster node is host:port, got {address!r}")
    return host.strip("[]"), int(port)
