"""A Redis Cluster on loopback, from the same ``redis-server`` binary as the embedded Redis.

N masters split the 16,384 hash slots evenly (``CLUSTER ADDSLOTS``), meet each other
(``CLUSTER MEET``) and, when asked, each gets replicas (``CLUSTER REPLICATE``): no
``redis-cli --cluster`` or any other tool. Every node listens on 127.0.0.1, persists
nothing, and is a child of the supervisor that started it.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wsfleet.errors import StartupError
from wsfleet_tools.launcher.children import Child, Supervisor
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis
from wsfleet_tools.launcher.ports import free_port

HASH_SLOTS = 16384
NODE_TIMEOUT_MS = 2000  # how long a master may be unreachable before its replica takes over
FORM_TIMEOUT_S = 30.0
BUS_PORT_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000 (Redis 6.2)


@dataclass(frozen=True)
class ClusterNode:
    name: str
    port: int
    child: Child
    master: str | None  # the name of the master this node replicates; None for a master


def cluster_url(nodes: list[ClusterNode]) -> str:
    """The URL that reaches the cluster, naming every node (any may be down when a
    process starts)."""
    return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes)


def slot_ranges(masters: int) -> list[range]:
    """The hash slots of each master: contiguous, as even as they divide."""
    if masters < 1:
        raise ValueError(f"a cluster needs at least one master, got {masters}")
    bounds = [HASH_SLOTS * n // masters for n in range(masters + 1)]
    return [range(start, end) for start, end in itertools.pairwise(bounds)]


async def start_redis_cluster(
    supervisor: Supervisor, masters: int, directory: Path, replicas: int = 0
) -> list[ClusterNode]:
    """Start ``masters`` masters, each with ``replicas`` replicas, and wait until every
    node says the cluster is ok. Raises :class:`StartupError`."""
    ranges = slot_ranges(masters)
    if replicas < 0:
        raise StartupError(f"replicas per master must be 0 or more, got {replicas}")
    nodes: list[ClusterNode] = []
    for index in range(masters):
        nodes.append(await _start_node(supervisor, f"redis-{index + 1}", directory, None))
        for copy in range(replicas):
            name = f"redis-{index + 1}-replica-{copy + 1}"
            nodes.append(await _start_node(supervisor, name, directory, f"redis-{index + 1}"))
    clients = {node.name: aioredis.Redis(port=node.port, decode_responses=True) for node in nodes}
    try:
        master_nodes = [node for node in nodes if node.master is None]
        for node, slots in zip(master_nodes, ranges, strict=True):
            await clients[node.name].cluster("ADDSLOTS", *slots)
        first = nodes[0]
        for node in nodes[1:]:
            await clients[node.name].cluster("MEET", "127.0.0.1", first.port)
        ids = {name: await client.cluster("MYID") for name, client in clients.items()}
        for node in nodes:
            if node.master is not None:
                await _replicate(clients[node.name], ids[node.master])
        await _wait_formed(clients, len(nodes))
    except RedisError as exc:
        raise StartupError(f"cannot form the Redis Cluster: {exc}") from None
    finally:
        for client in clients.values():
            await client.aclose()
    return nodes


async def _start_node(
    supervisor: Supervisor, name: str, directory: Path, master: str | None
) -> ClusterNode:
    port = free_port(companion_offset=BUS_PORT_OFFSET)  # the bus: port + 10000
    cluster_mode = (
        *("--cluster-enabled", "yes"),
        *("--cluster-config-file", "nodes.conf"),
        *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
    )
    child, _ = await start_embedded_redis(supervisor, port, directory / name, name, cluster_mode)
    return ClusterNode(name, port, child, master)


async def _replicate(client: aioredis.Redis, master_id: str) -> None:
    """CLUSTER REPLICATE, once this node has heard of its master through the gossip."""
    deadline = asyncio.get_running_loop().time() + FORM_TIMEOUT_S
    while True:
        try:
            await client.cluster("REPLICATE", master_id)
            return
        except RedisError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise StartupError(f"a replica could not follow its master: {exc}") from None
            await asyncio.sleep(0.1)


async def _wait_formed(clients: dict[str, aioredis.Redis], total: int) -> None:
    """Until every node says the cluster is ok, knows every node, and every node holds
    the same view of who replicates whom at which config epoch, masters' epochs distinct.
    A replica that still holds its master's epoch from before the masters settled their
    epoch collisions asks for votes with the old one, is denied, and never takes over."""
    deadline = asyncio.get_running_loop().time() + FORM_TIMEOUT_S
    last = ""
    while asyncio.get_running_loop().time() < deadline:
        states = [_info(await client.cluster("INFO")) for client in clients.values()]
        views = [_view(await client.cluster("NODES")) for client in clients.values()]
        formed = all(
            s.get("cluster_state") == "ok" and s.get("cluster_known_nodes") == str(total)
            for s in states
        )
        if formed and _settled(views):
            return
        last = ", ".join(
            f"{name}: {s.get('cluster_state')}/{s.get('cluster_known_nodes')} nodes"
            for name, s in zip(clients, states, strict=True)
        ) + ("" if _settled(views) else "; config epochs not yet agreed")
        await asyncio.sleep(0.1)
    raise StartupError(f"the Redis Cluster did not form in {FORM_TIMEOUT_S:g} s ({last})")


View = dict[str, tuple[str, str, str]]  # node id -> (role, master id, config epoch)


def _view(nodes: dict[str, dict[str, object]]) -> View:
    """One node's ``CLUSTER NODES``, as parsed by redis-py, reduced to what must agree."""
    view: View = {}
    for node in nodes.values():
        flags = str(node["flags"]).split(",")
        role = "master" if "master" in flags else "replica"
        view[str(node["node_id"])] = (role, str(node["master_id"]), str(node["epoch"]))
    return view


def _settled(views: list[View]) -> bool:
    """Every node sees the same roles and epochs, and no two masters share an epoch."""
    if not views or any(view != views[0] for view in views[1:]):
        return False
    epochs = [epoch for role, _, epoch in views[0].values() if role == "master"]
    return len(epochs) == len(set(epochs))


def _info(text: str | bytes | dict[str, object]) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict (redis-py may already have parsed it)."""
    if isinstance(text, dict):
        return {key: str(value) for key, value in text.items()}
    if isinstance(text, bytes):
        text = text.decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
