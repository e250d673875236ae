"""Versioned, immutable configuration snapshots: plain values, no event loop.

A :class:`Snapshot` maps each xDS type URL to a :class:`TypeSnapshot`: the
resources of that type, each serialized once (``body``) and versioned by a hash
of its content, plus a type-level version for State-of-the-World responses.

Versions are derived from content only: rebuilding an unchanged config yields the
same versions (nothing is re-pushed), a restarted control plane computes the versions it
had, and replicas that read the same policy and registry agree on every version — so an
Envoy that reconnects to another replica, or to a restarted one, is sent nothing that did
not change (docs/envoy-behaviours.md, 3: versions must not clash across restarts).

The protocol machines (:mod:`xds_server.sotw`, :mod:`xds_server.delta`) and the builders
read these types only; the cache the ADS streams wait on is
:mod:`xds_server.snapshot_cache`, kept apart so that nothing pure reaches an event loop
(``tests/unit/test_core_is_sans_io.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xds_server import envoy_types

DEFAULT_GROUP = "*"


@dataclass(frozen=True, slots=True)
class Resource:
    """One Envoy resource: its name, content version and serialized protobuf."""

    name: str
    version: str
    body: bytes
    spec: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class TypeSnapshot:
    """All resources of one type at one version."""

    version: str
    resources: Mapping[str, Resource]

    def content_key(self, names: frozenset[str] | None = None) -> tuple[tuple[str, str], ...]:
        """(name, version) pairs of the resources named (all when ``names`` is None)."""
        return tuple(
            (name, resource.version)
            for name, resource in sorted(self.resources.items())
            if names is None or name in names
        )


EMPTY_TYPE = TypeSnapshot(version="", resources=MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole config one group of Envoys should have."""

    types: Mapping[str, TypeSnapshot]

    def of(self, type_url: str) -> TypeSnapshot:
        return self.types.get(type_url, EMPTY_TYPE)


def content_version(spec: Mapping[str, Any]) -> str:
    """A stable hash of a resource's content (its canonical JSON)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


TYPE_VERSION_CHARS = 16  # hex digits of a type's content hash in its version


Interned = dict[tuple[str, str, str], Resource]  # (type URL, name, version) -> resource


def build_snapshot(
    specs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    previous: Snapshot | None,
    interned: Interned | None = None,
) -> Snapshot:
    """Serialize ``specs`` (type URL -> name -> resource dict) into a snapshot.

    A resource whose content was serialized before (in ``previous``, or in any
    snapshot sharing ``interned``) reuses those bytes; a type whose resources
    are all unchanged keeps its previous version.
    """
    interned = {} if interned is None else interned
    types: dict[str, TypeSnapshot] = {}
    for type_url, by_name in specs.items():
        before = previous.of(type_url) if previous else EMPTY_TYPE
        resources: dict[str, Resource] = {}
        for name, spec in sorted(by_name.items()):
            version = content_version(spec)
            old = before.resources.get(name)
            if old is not None and old.version == version:
                resources[name] = old
            elif (type_url, name, version) in interned:
                resources[name] = interned[(type_url, name, version)]
            else:
                body = envoy_types.encode(type_url, dict(spec))
                resources[name] = Resource(name, version, body, MappingProxyType(dict(spec)))
            interned[(type_url, name, version)] = resources[name]
        candidate = TypeSnapshot("", MappingProxyType(resources))
        if before.version and candidate.content_key() == before.content_key():
            types[type_url] = before
        else:
            digest = hashlib.sha256(repr(candidate.content_key()).encode()).hexdigest()
            types[type_url] = TypeSnapshot(digest[:TYPE_VERSION_CHARS], candidate.resources)
    return Snapshot(MappingProxyType(types))
