"""Envoy's protobuf types (betterproto2, from envoy-data-plane), imported once.

Importing them costs about a second, so every module that needs them goes
through here. :func:`encode` turns a resource written as a plain dict (the
shape of Envoy's YAML/JSON config, with ``@type`` for ``Any`` fields) into
the protobuf bytes Envoy receives.
"""

from __future__ import annotations

import json
from typing import Any

# Each import registers message types in betterproto2's pool, which is what
# lets a dict's "@type" name them inside google.protobuf.Any fields.
import envoy_data_plane.envoy.extensions.access_loggers.stream.v3
import envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3
import envoy_data_plane.envoy.extensions.filters.http.router.v3
import envoy_data_plane.envoy.extensions.formatter.req_without_query.v3
import envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3
import envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3
import envoy_data_plane.envoy.extensions.upstreams.http.v3  # noqa: F401
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    DownstreamTlsContext,
    Secret,
)
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)

from xds_server import type_urls

MESSAGE_TYPES: dict[str, Any] = {
    type_urls.LISTENER: Listener,
    type_urls.ROUTE: RouteConfiguration,
    type_urls.CLUSTER: Cluster,
    type_urls.ENDPOINT: ClusterLoadAssignment,
    type_urls.SECRET: Secret,
}

__all__ = [
    "MESSAGE_TYPES",
    "DeltaDiscoveryRequest",
    "DiscoveryRequest",
    "DownstreamTlsContext",
    "HttpConnectionManager",
    "decode",
    "encode",
]


def encode(type_url: str, resource: dict[str, Any]) -> bytes:
    """Serialize a resource dict as the protobuf message ``type_url`` names."""
    if type_url == type_urls.ENDPOINT:
        return _LOAD_ASSIGNMENTS.encode(resource)
    misnamed: dict[str, Any] = {}
    outlier = resource.get("outlier_detection")
    if type_url == type_urls.CLUSTER and isinstance(outlier, dict):
        # betterproto2's from_dict cannot name fields like consecutive_5xx (it looks for
        # "consecutive_5_xx"): set them on the message instead
        misnamed = {key: value for key, value in outlier.items() if "5xx" in key}
        if misnamed:
            outlier = {key: value for key, value in outlier.items() if key not in misnamed}
            resource = {**resource, "outlier_detection": outlier}
    message = MESSAGE_TYPES[type_url].from_dict(resource)
    for key, value in misnamed.items():
        setattr(message.outlier_detection, key, value)
    return bytes(message)


def decode(type_url: str, body: bytes) -> dict[str, Any]:
    """Parse protobuf bytes back to a dict (debug endpoints, tests)."""
    result: dict[str, Any] = MESSAGE_TYPES[type_url].parse(body).to_dict()
    return result


class LoadAssignmentEncoder:
    """Encodes ClusterLoadAssignments endpoint by endpoint, remembering each one.

    betterproto2 needs ~0.3 s for a 1,000-endpoint assignment (docs/envoy-behaviours.md, 4),
    and a pool changes one endpoint at a time. Protobuf messages concatenate:
    the assignment is written as its header fields followed by each
    ``LbEndpoint``'s bytes, and an endpoint seen before costs a dict lookup.
    """

    def __init__(self, max_cached: int = 500_000) -> None:
        self._cache: dict[str, bytes] = {}
        self._max_cached = max_cached

    def encode(self, resource: dict[str, Any]) -> bytes:
        from xds_server import wire

        out = bytearray(wire.string_field(1, resource.get("cluster_name", "")))
        for locality in resource.get("endpoints", []):
            header = {key: value for key, value in locality.items() if key != "lb_endpoints"}
            body = bytearray(bytes(LocalityLbEndpoints.from_dict(header)))
            for lb_endpoint in locality.get("lb_endpoints", []):
                body += wire.message_field(2, self._lb_endpoint(lb_endpoint))
            out += wire.message_field(2, bytes(body))
        rest = {
            key: value
            for key, value in resource.items()
            if key not in ("cluster_name", "endpoints")
        }
        if rest:
            out += bytes(ClusterLoadAssignment.from_dict(rest))
        return bytes(out)

    def _lb_endpoint(self, spec: dict[str, Any]) -> bytes:
        key = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            cached = self._cache[key] = bytes(LbEndpoint.from_dict(spec))
        return cached


_LOAD_ASSIGNMENTS = LoadAssignmentEncoder()
