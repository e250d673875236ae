"""Each Envoy's own routes: who it is, and whether it is being drained.

Envoy cannot drain upgraded WebSockets itself (docs/envoy-behaviours.md, 11), so an Envoy
is drained by the gateways behind it, and for that they must know which Envoy each
connection came through. Every Envoy therefore gets its own RouteConfigurations (RDS):
the group's (:mod:`xds_server.builders`), plus

- ``x-wsfleet-edge: <node id>`` on every request it forwards, replacing any value a
  client sent (so no client can pass for another Envoy's);
- ``GET /edge/ready``, answered by Envoy itself: 200 while the node serves, 503 once it
  drains (the L4 balancer in front of the Envoys and Kubernetes readiness probe it);
- while it drains, every other request (a new upgrade, an SSE stream, a poll) answered
  503 with ``Retry-After`` by Envoy itself: its clients go to another Envoy.

All of it is RDS, never LDS: a listener change would drain every connection on it
(docs/envoy-behaviours.md, 5). Only RDS differs per node; the other types are the group's,
shared. A node's RDS is rebuilt only when its group's RDS or its drain state changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from xds_server import envoy_types, type_urls
from xds_server.snapshot import (
    TYPE_VERSION_CHARS,
    Resource,
    Snapshot,
    TypeSnapshot,
    content_version,
)

EDGE_HEADER = "x-wsfleet-edge"
READY_PATH = "/edge/ready"
DRAINING_RETRY_AFTER_S = 1
"""``Retry-After`` on the 503s of a draining Envoy: the client's next try (through the L4
balancer, which has stopped picking this Envoy) soon."""
DRAINING_BODY = "edge draining: connect again (another edge will take you)\n"
READY_BODY = "ready\n"


def _text_response(status: int, body: str) -> dict[str, Any]:
    return {"status": status, "body": {"inline_string": body}}


def edge_route_configuration(
    spec: Mapping[str, Any], node_id: str, draining: bool
) -> dict[str, Any]:
    """The group's RouteConfiguration ``spec`` as Envoy ``node_id`` serves it."""
    ready: dict[str, Any] = {
        "name": "edge-ready",
        "match": {"prefix": READY_PATH},  # every route of ours matches on a prefix
        "direct_response": _text_response(503 if draining else 200, READY_BODY),
    }
    if draining:
        ready["direct_response"]["body"] = {"inline_string": DRAINING_BODY}
    refused: list[dict[str, Any]] = []
    if draining:
        refused.append(
            {
                "name": "edge-draining",
                "match": {"prefix": "/"},
                "direct_response": _text_response(503, DRAINING_BODY),
                "response_headers_to_add": [
                    {
                        "header": {"key": "retry-after", "value": str(DRAINING_RETRY_AFTER_S)},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        )
    hosts = [
        {**host, "routes": [ready, *refused, *host.get("routes", [])]}
        for host in spec.get("virtual_hosts", [])
    ]
    return {
        **spec,
        "virtual_hosts": hosts,
        "request_headers_to_add": [
            *spec.get("request_headers_to_add", []),
            {
                "header": {"key": EDGE_HEADER, "value": node_id},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
        ],
    }


def edge_routes(routes: TypeSnapshot, node_id: str, draining: bool) -> TypeSnapshot:
    """A node's RDS: every route configuration of its group's, made its own."""
    resources: dict[str, Resource] = {}
    for name, resource in routes.resources.items():
        spec = edge_route_configuration(resource.spec, node_id, draining)
        body = envoy_types.encode(type_urls.ROUTE, spec)
        resources[name] = Resource(name, content_version(spec), body, MappingProxyType(spec))
    typed = TypeSnapshot("", MappingProxyType(resources))
    digest = hashlib.sha256(repr(typed.content_key()).encode()).hexdigest()
    return TypeSnapshot(digest[:TYPE_VERSION_CHARS], typed.resources)


@dataclass(frozen=True, slots=True)
class _NodeRoutes:
    group_version: str  # the group's RDS version these were made from
    draining: bool
    routes: TypeSnapshot


class EdgeRoutes:
    """The snapshot each node sees: its group's, with RDS of its own (cached per node)."""

    def __init__(self) -> None:
        self._draining: frozenset[str] = frozenset()
        self._made: dict[str, _NodeRoutes] = {}

    @property
    def draining(self) -> frozenset[str]:
        return self._draining

    def set_draining(self, nodes: Collection[str]) -> bool:
        """The node ids being drained now; True if that changed."""
        nodes = frozenset(nodes)
        changed, self._draining = nodes != self._draining, nodes
        return changed

    def for_node(self, snapshot: Snapshot | None, node_id: str) -> Snapshot | None:
        if snapshot is None or type_urls.ROUTE not in snapshot.types:
            return snapshot
        group_routes = snapshot.of(type_urls.ROUTE)
        draining = node_id in self._draining
        made = self._made.get(node_id)
        if made is None or made.group_version != group_routes.version or made.draining != draining:
            made = _NodeRoutes(
                group_routes.version, draining, edge_routes(group_routes, node_id, draining)
            )
            self._made[node_id] = made
        return Snapshot(MappingProxyType({**snapshot.types, type_urls.ROUTE: made.routes}))

    def forget(self, node_id: str) -> None:
        """The node's last stream ended: drop its cached routes."""
        self._made.pop(node_id, None)
