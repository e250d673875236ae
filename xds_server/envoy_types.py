"""Envoy's protobuf types, built once at import from ``envoy_api.binpb`` (the descriptors of
the Envoy API messages this server uses, written by scripts/envoy_api_descriptors.py from
xds-protos) in a descriptor pool of their own; protobuf's C core (upb) parses and
serializes them.

:func:`encode` turns a resource written as a plain dict (the shape of Envoy's YAML/JSON
config, field names as in the .proto files, ``@type`` for ``Any`` fields) into the
protobuf bytes Envoy receives. Until 2026-12 these were envoy-data-plane's betterproto2
classes: about a second to import and 0.6 s more for the first snapshot (each class built
its pydantic validator on first use), in every control plane started; here 0.01 s and a
few milliseconds (docs/envoy-behaviours.md, 4). The pool is private so that its files
(Envoy's copies of google/rpc, xds, udpa, ...) never clash with other packages' in
protobuf's default pool.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from xds_server import type_urls

DESCRIPTORS_FILE = "envoy_api.binpb"


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("xds_server").joinpath(DESCRIPTORS_FILE).read_bytes()
    )
    for file in files.file:  # in dependency order
        pool.Add(file)
    return pool


POOL = _pool()


def message_class(full_name: str) -> type[Message]:
    """The class of the Envoy API message ``full_name`` (``envoy.config.core.v3.Node``)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


MESSAGE_TYPES: dict[str, type[Message]] = {
    url: message_class(url.removeprefix("type.googleapis.com/")) for url in type_urls.ALL
}
DiscoveryRequest = message_class("envoy.service.discovery.v3.DiscoveryRequest")
DeltaDiscoveryRequest = message_class("envoy.service.discovery.v3.DeltaDiscoveryRequest")
_LB_ENDPOINT = message_class("envoy.config.endpoint.v3.LbEndpoint")
_LOCALITY_LB_ENDPOINTS = message_class("envoy.config.endpoint.v3.LocalityLbEndpoints")
_CLUSTER_LOAD_ASSIGNMENT = MESSAGE_TYPES[type_urls.ENDPOINT]

__all__ = [
    "MESSAGE_TYPES",
    "POOL",
    "DeltaDiscoveryRequest",
    "DiscoveryRequest",
    "decode",
    "encode",
    "message_class",
]


def encode(type_url: str, resource: dict[str, Any]) -> bytes:
    """Serialize a resource dict as the protobuf message ``type_url`` names."""
    if type_url == type_urls.ENDPOINT:
        return _LOAD_ASSIGNMENTS.encode(resource)
    return _serialize(MESSAGE_TYPES[type_url], resource)


def _serialize(message_type: type[Message], fields: dict[str, Any]) -> bytes:
    message = json_format.ParseDict(fields, message_type(), descriptor_pool=POOL)
    # deterministic: map entries (a Struct's keys) in order, so equal specs give equal bytes
    return message.SerializeToString(deterministic=True)


def decode(type_url: str, body: bytes) -> dict[str, Any]:
    """Parse protobuf bytes back to a dict (debug endpoints, tests)."""
    result: dict[str, Any] = json_format.MessageToDict(
        MESSAGE_TYPES[type_url].FromString(body), descriptor_pool=POOL
    )
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
            body = bytearray(_serialize(_LOCALITY_LB_ENDPOINTS, header))
            for lb_endpoint in locality.get("lb_endpoints", []):
                body += wire.message_field(2, self._lb_endpoint(lb_endpoint))
            out += wire.message_field(2, bytes(body))
        rest = {
            key: value
            for key, value in resource.items()
            if key not in ("cluster_name", "endpoints")
        }
        if rest:
            out += _serialize(_CLUSTER_LOAD_ASSIGNMENT, rest)
        return bytes(out)

    def _lb_endpoint(self, spec: dict[str, Any]) -> bytes:
        key = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            cached = self._cache[key] = _serialize(_LB_ENDPOINT, spec)
        return cached


_LOAD_ASSIGNMENTS = LoadAssignmentEncoder()
