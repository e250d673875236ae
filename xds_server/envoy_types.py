"""Envoy's protobuf types, imported once: Envoy's API compiled for Google's protobuf
runtime (the ``xds-protos`` package; its C core, upb, parses and serializes).

:func:`encode` turns a resource written as a plain dict (the shape of Envoy's YAML/JSON
config, field names as in the .proto files, ``@type`` for ``Any`` fields) into the
protobuf bytes Envoy receives. Until 2026-12 these were envoy-data-plane's betterproto2
classes: about a second to import and 0.6 s more for the first snapshot (each class built
its pydantic validator on first use), in every control plane started; here 0.08 s and a
few milliseconds (docs/envoy-behaviours.md, 4).
"""

from __future__ import annotations

import json
from typing import Any

# Each import registers message types in protobuf's default pool, which is what lets a
# dict's "@type" name them inside google.protobuf.Any fields.
import envoy.extensions.access_loggers.stream.v3.stream_pb2
import envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.formatter.req_without_query.v3.req_without_query_pb2
import envoy.extensions.resource_monitors.downstream_connections.v3.downstream_connections_pb2
import envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: F401
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_components_pb2 import LbEndpoint, LocalityLbEndpoints
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import DownstreamTlsContext
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.protobuf import json_format
from google.protobuf.message import Message

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
    return _serialize(MESSAGE_TYPES[type_url], resource)


def _serialize(message_type: type[Message], fields: dict[str, Any]) -> bytes:
    message = json_format.ParseDict(fields, message_type())
    # deterministic: map entries (a Struct's keys) in order, so equal specs give equal bytes
    return message.SerializeToString(deterministic=True)


def decode(type_url: str, body: bytes) -> dict[str, Any]:
    """Parse protobuf bytes back to a dict (debug endpoints, tests)."""
    result: dict[str, Any] = json_format.MessageToDict(MESSAGE_TYPES[type_url].FromString(body))
    return result


class LoadAssignmentEncoder:
    """Encodes ClusterLoadAssignments endpoint by endpoint, remembering each one.

    A pool changes one endpoint at a time, and a 1,000-endpoint assignment is a thousand
    dicts to parse. Protobuf messages concatenate:
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
            body = bytearray(_serialize(LocalityLbEndpoints, header))
            for lb_endpoint in locality.get("lb_endpoints", []):
                body += wire.message_field(2, self._lb_endpoint(lb_endpoint))
            out += wire.message_field(2, bytes(body))
        rest = {
            key: value
            for key, value in resource.items()
            if key not in ("cluster_name", "endpoints")
        }
        if rest:
            out += _serialize(ClusterLoadAssignment, rest)
        return bytes(out)

    def _lb_endpoint(self, spec: dict[str, Any]) -> bytes:
        key = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            cached = self._cache[key] = _serialize(LbEndpoint, spec)
        return cached


_LOAD_ASSIGNMENTS = LoadAssignmentEncoder()
