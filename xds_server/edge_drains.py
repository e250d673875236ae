"""Draining an Envoy: the admin API (``/envoys``) and the loop that follows drain state.

Envoy does not close upgraded WebSockets when drained (docs/envoy-behaviours.md, 11), so
a drain goes, in order:

1. The drain is written to the registry (fleet-wide: every control-plane replica serves
   the node the same routes) and this replica's routes change at once; the others follow
   within ``poll_s``. The node's RDS turns ``/edge/ready`` to 503 and answers every new
   request with 503 + ``Retry-After`` (:mod:`xds_server.edge_routes`): the L4 balancer
   and Kubernetes stop sending it connections.
2. ``delist_s`` later every live gateway pod is told (its local admin API,
   ``POST /edge-drains``) to close the connections that came through that node with 1012
   and a retry hint, paced over ``budget_s``, and to force-close what is left at its end.
   The pods keep serving everyone else.
3. ``GET /envoys/drain/{node}`` sums what the pods still hold; ``POST /envoys/undrain``
   (after the Envoy was replaced under the same node id) puts its routes back.

The pods' order is idempotent per drain (``drain_id``): a status read on any replica
past ``delist_s`` repeats it, so a drain goes on even if the replica that started it died.

Every replica knows every Envoy: each publishes the Envoys streaming from it into the
registry (:meth:`~wsfleet.registry.base.Registry.put_envoys`) every ``poll_s`` and soon
after one connects or disconnects, for ``PRESENCE_PERIODS`` polls; the others merge that
with their own ledger, so ``GET /envoys`` lists the whole fleet and a drain by node or zone
can be sent to any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from wsfleet.admin_auth import error, json_body, require_token
from wsfleet.cancelling import cancel_and_wait
from wsfleet.registry import EdgeDrain, EnvoyPresence, PodRecord, Registry, RegistryUnavailable
from wsfleet.registry.base import MAX_PRESENCE_CHARS
from xds_server.edge_routes import EdgeRoutes
from xds_server.ledger import Ledger, NodeStatus
from xds_server.snapshot_cache import SnapshotCache

log = structlog.get_logger()

DEFAULT_BUDGET_S = 30.0
DEFAULT_DELIST_S = 2.0
MAX_BUDGET_S = 24 * 3600  # as a pod drain
MAX_DELIST_S = 300.0
MAX_NAME_CHARS = 128  # node ids and zones
PRESENCE_PERIODS = 3  # a replica's published Envoys last this many polls unless refreshed
PUBLISH_GAP_S = 0.5  # at least this long between two publications (a reconnect storm)

PodCall = Callable[[PodRecord, str, str, "dict[str, Any] | None"], Awaitable[tuple[int, Any]]]


def drain_id(drain: EdgeDrain) -> str:
    """What a pod knows one drain by: the node and when it started (a later drain of the
    same node is another one)."""
    return f"{drain.node}@{drain.started_at:.6f}"


def drain_state(drain: EdgeDrain, now: float, remaining: int) -> str:
    """``delisting`` until ``delist_s`` has passed, then ``closing`` while connections
    through the node remain, then ``drained``."""
    if now < drain.started_at + drain.delist_s:
        return "delisting"
    return "closing" if remaining > 0 else "drained"


def budget_left(drain: EdgeDrain, now: float) -> float:
    """What is left of the closing budget (it starts after ``delist_s``)."""
    ends = drain.started_at + drain.delist_s + drain.budget_s
    return max(0.0, min(drain.budget_s, ends - now))


def default_replica_id() -> str:
    """This control plane among its replicas: host name (the pod's, in Kubernetes) and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def presence_of(nodes: list[NodeStatus], replica: str, now: float) -> list[EnvoyPresence]:
    """What a replica publishes: the Envoys connected to it (a node id too long to be named
    in a drain is left out; other fields are cut to the registry's bound)."""

    def cut(text: str) -> str:
        return text[:MAX_PRESENCE_CHARS]

    return [
        EnvoyPresence(
            node.node_id,
            cut(node.zone),
            cut(node.region),
            cut(node.envoy_version),
            node.connected_at,
            replica,
            now,
        )
        for node in nodes
        if node.connected and len(node.node_id) <= MAX_NAME_CHARS
    ]


def fleet_envoys(
    own: list[NodeStatus], others: list[EnvoyPresence], replica: str
) -> dict[str, dict[str, Any]]:
    """Every Envoy known, by node id: this replica's ledger merged with what the other
    replicas published. A node connected here is shown as seen here; one connected
    elsewhere wins over this replica's memory of it gone; of two other replicas claiming a
    node, the newer stream (``connected_at``) wins."""
    envoys: dict[str, dict[str, Any]] = {}
    for status in own:
        envoys[status.node_id] = {
            "node": status.node_id,
            "zone": status.zone,
            "region": status.region,
            "connected": status.connected,
            "replica": replica,
            "envoy_version": status.envoy_version,
            "connected_at": status.connected_at,
        }
    for presence in sorted(others, key=lambda p: p.connected_at):
        known = envoys.get(presence.node)
        if presence.replica == replica or (
            known is not None and known["replica"] == replica and known["connected"]
        ):
            continue  # this replica's own word is its ledger
        envoys[presence.node] = {
            "node": presence.node,
            "zone": presence.zone,
            "region": presence.region,
            "connected": True,
            "replica": presence.replica,
            "envoy_version": presence.envoy_version,
            "connected_at": presence.connected_at,
        }
    return envoys


def parse_seconds(body: dict[str, object], key: str, default: float, most: float) -> float:
    """A number of seconds in [0, most] from the body; raises ValueError with the reason."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of seconds")
    if not 0 <= value <= most:
        raise ValueError(f"{key} must be between 0 and {most:g}")
    return float(value)


class EdgeDrains:
    """The ``/envoys`` handlers and the drain-state follower of one control plane."""

    def __init__(
        self,
        registry: Registry,
        ledger: Ledger,
        edges: EdgeRoutes,
        cache: SnapshotCache,
        pod_call: PodCall,
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
    ) -> None:
        self._registry = registry
        self._ledger = ledger
        self._replica = default_replica_id() if replica is None else replica
        self._others: list[EnvoyPresence] = []  # other replicas' Envoys, as last read
        self._presence_ttl_s = 30.0  # PRESENCE_PERIODS polls, once run() is given poll_s
        self._wake = asyncio.Event()  # an Envoy connected or disconnected here
        ledger.on_change(self._wake.set)
        self._edges = edges
        self._cache = cache
        self._pod_call = pod_call
        self._clock = clock
        self._drains: dict[str, EdgeDrain] = {}  # as last read from the registry
        self._tasks: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application, token: str | None) -> None:
        app.router.add_get("/envoys", require_token(token, self.envoys))
        app.router.add_post("/envoys/drain", require_token(token, self.start))
        app.router.add_get("/envoys/drain/{node}", require_token(token, self.status))
        app.router.add_post("/envoys/undrain", require_token(token, self.undrain))
        app.on_cleanup.append(self._stop)

    async def _stop(self, _: web.Application) -> None:
        await cancel_and_wait(*self._tasks)
        with contextlib.suppress(RegistryUnavailable):  # a clean stop: not listed any more
            await self._registry.put_envoys(self._replica, [], self._presence_ttl_s)

    # -- following the registry ---------------------------------------------------------

    async def sync(self) -> None:
        """Read the drains from the registry (routes change if the set of nodes did) and
        the Envoys the other replicas published."""
        self._apply(await self._registry.edge_drains())
        self._others = [
            envoy for envoy in await self._registry.envoys() if envoy.replica != self._replica
        ]

    async def publish(self) -> None:
        """Publish the Envoys connected here, for :attr:`_presence_ttl_s`."""
        envoys = presence_of(self._ledger.connected(), self._replica, self._clock())
        await self._registry.put_envoys(self._replica, envoys, self._presence_ttl_s)

    def _apply(self, drains: dict[str, EdgeDrain]) -> None:
        self._drains = drains
        if self._edges.set_draining(drains):
            log.info("edge_drains_changed", draining=sorted(drains))
            self._cache.touch()

    async def run(self, poll_s: float) -> None:
        """Publish this replica's Envoys and follow the registry until cancelled, every
        ``poll_s`` and soon after an Envoy connects or disconnects here (a registry outage
        keeps the last state)."""
        self._presence_ttl_s = PRESENCE_PERIODS * poll_s
        while True:
            self._wake.clear()
            try:
                await self.publish()
                await self.sync()
            except RegistryUnavailable as exc:
                log.warning("edge_drains_unreadable", error=str(exc)[:200])
            await asyncio.sleep(min(PUBLISH_GAP_S, poll_s))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, poll_s - PUBLISH_GAP_S))

    # -- handlers ------------------------------------------------------------------------

    async def envoys(self, _: web.Request) -> web.Response:
        """Every Envoy of the fleet: those this replica has seen (connected or lately
        gone), those streaming from the other replicas (``replica`` says which), and any
        draining that none of them serves, with drain state."""
        await self.sync()
        known = fleet_envoys(self._ledger.nodes(), self._others, self._replica)
        listed: list[dict[str, Any]] = []
        for node, envoy in sorted(known.items()):
            drain = self._drains.get(node)
            listed.append(
                {
                    **envoy,
                    "draining": drain is not None,
                    "drain": None if drain is None else self._plain_view(drain),
                }
            )
        for node, drain in sorted(self._drains.items()):
            if node not in known:
                listed.append(
                    {
                        "node": node,
                        "zone": drain.zone,
                        "region": None,
                        "connected": False,  # streams from no replica: gone
                        "replica": None,
                        "envoy_version": None,
                        "connected_at": None,
                        "draining": True,
                        "drain": self._plain_view(drain),
                    }
                )
        return web.json_response({"envoys": listed})

    def _known(self) -> dict[str, str]:
        """Node id -> zone of every Envoy known fleet-wide (this ledger, the other
        replicas' published Envoys, the drains)."""
        known = {drain.node: drain.zone for drain in self._drains.values()}
        envoys = fleet_envoys(self._ledger.nodes(), self._others, self._replica)
        known.update({node: envoy["zone"] for node, envoy in envoys.items()})
        return known

    def _select(self, body: dict[str, object]) -> list[tuple[str, str]] | web.Response:
        """(node, zone) pairs the body names, or the error response."""
        chosen = [key for key in ("node", "zone") if key in body]
        if len(chosen) != 1:
            return error(400, 'name exactly one of: "node" (an Envoy node id) or "zone"')
        value = body[chosen[0]]
        if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
            return error(400, f"{chosen[0]} must be a string of 1 to {MAX_NAME_CHARS} characters")
        known = self._known()
        if chosen[0] == "node":
            if value not in known:
                return error(404, f"unknown Envoy node {value!r}")
            return [(value, known[value])]
        nodes = sorted((node, zone) for node, zone in known.items() if zone == value)
        if not nodes:
            return error(404, f"no Envoy in zone {value!r}")
        return nodes

    async def start(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        try:
            budget_s = parse_seconds(body, "budget_s", DEFAULT_BUDGET_S, MAX_BUDGET_S)
            delist_s = parse_seconds(body, "delist_s", DEFAULT_DELIST_S, MAX_DELIST_S)
        except ValueError as exc:
            return error(400, str(exc))
        await self.sync()
        selected = self._select(body)
        if isinstance(selected, web.Response):
            return selected
        now = self._clock()
        drains = []
        for node, zone in selected:
            existing = self._drains.get(node)
            if existing is not None:  # a drain of this node runs already: report it
                drains.append(existing)
                continue
            drain = EdgeDrain(node, zone, budget_s, delist_s, now)
            await self._registry.put_edge_drain(drain)
            self._apply({**self._drains, node: drain})
            self._spawn(self._close_after_delist(drain))
            log.info("edge_drain_started", node=node, zone=zone, budget_s=budget_s)
            drains.append(drain)
        return web.json_response(await self._view(drains, tell_pods=False), status=202)

    async def status(self, request: web.Request) -> web.Response:
        name = request.match_info["node"]
        await self.sync()
        drains = [self._drains[name]] if name in self._drains else []
        if not drains:  # a zone's drains
            drains = [drain for _, drain in sorted(self._drains.items()) if drain.zone == name]
        if not drains:
            return error(404, f"no drain of Envoy node or zone {name!r}")
        return web.json_response(await self._view(drains, tell_pods=True))

    async def undrain(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        node = body.get("node")
        if not isinstance(node, str) or not node or len(node) > MAX_NAME_CHARS:
            return error(400, 'name the Envoy to undrain: {"node": "ID"}')
        await self.sync()
        drain = self._drains.get(node)
        if drain is None or not await self._registry.remove_edge_drain(node):
            return error(404, f"Envoy node {node!r} is not draining")
        self._apply({n: d for n, d in self._drains.items() if n != node})
        log.info("edge_undrained", node=node)
        return web.json_response({"node": node, "zone": drain.zone, "draining": False})

    # -- the pods ------------------------------------------------------------------------

    def _spawn(self, step: Awaitable[None]) -> None:
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_after_delist(self, drain: EdgeDrain) -> None:
        await asyncio.sleep(max(0.0, drain.started_at + drain.delist_s - self._clock()))
        try:
            if (await self._registry.edge_drains()).get(drain.node) != drain:
                return  # undrained (or drained anew) meanwhile
            await self._ask_pods(drain, tell=True)
        except RegistryUnavailable as exc:  # a status read repeats the order later
            log.warning("edge_drain_not_started", node=drain.node, error=str(exc)[:200])

    async def _ask_pods(self, drain: EdgeDrain, tell: bool) -> dict[str, Any]:
        """Each live pod's count of connections through the node; with ``tell``, the order
        to close them (repeating it changes nothing on a pod that has it)."""
        pods = await self._registry.list_pods()
        if tell:
            order = {
                "edge": drain.node,
                "drain_id": drain_id(drain),
                "budget_s": budget_left(drain, self._clock()),
            }
            calls = [self._pod_call(pod, "POST", "/edge-drains", order) for pod in pods]
        else:
            calls = [self._pod_call(pod, "GET", f"/edge-drains/{drain.node}", None) for pod in pods]
        answers = await asyncio.gather(*calls)
        remaining, errors = 0, {}
        for pod, (status, answer) in zip(pods, answers, strict=True):
            if status < 300 and isinstance(answer, dict):
                remaining += int(answer.get("open", 0))
            else:
                message = answer.get("error") if isinstance(answer, dict) else None
                errors[pod.pod_id] = str(message or f"HTTP {status}")
        return {"remaining": remaining, "errors": errors}

    def drain_views(self) -> dict[str, dict[str, Any]]:
        """Every Envoy drain as last read from the registry, by node (the fleet page's)."""
        return {node: self._plain_view(drain) for node, drain in self._drains.items()}

    def _plain_view(self, drain: EdgeDrain) -> dict[str, Any]:
        return {
            "node": drain.node,
            "zone": drain.zone,
            "budget_s": drain.budget_s,
            "delist_s": drain.delist_s,
            "started_at": drain.started_at,
        }

    async def _view(self, drains: list[EdgeDrain], tell_pods: bool) -> dict[str, Any]:
        """One drain's view; several (a zone's) summed, each listed under ``nodes``."""
        now = self._clock()
        views = []
        for drain in drains:
            past_delist = now >= drain.started_at + drain.delist_s
            asked = await self._ask_pods(drain, tell=tell_pods and past_delist)
            state = drain_state(drain, now, asked["remaining"])
            views.append({**self._plain_view(drain), "state": state, **asked})
        if len(views) == 1:
            return {**views[0], "nodes": views}
        order = ["delisting", "closing", "drained"]
        return {
            "node": None,
            "zone": views[0]["zone"],
            "budget_s": max(v["budget_s"] for v in views),
            "delist_s": max(v["delist_s"] for v in views),
            "started_at": min(v["started_at"] for v in views),
            "state": min((v["state"] for v in views), key=order.index),
            "remaining": sum(v["remaining"] for v in views),
            "errors": {k: e for v in views for k, e in v["errors"].items()},
            "nodes": views,
        }
