"""Turns the current policy bundle and membership into snapshots, one per node group.

A node group is the region an Envoy says it is in (``node.locality.region``) and, when
its bootstrap asks for one, the port of its client listener (``builders.NodeGroup``);
Envoys without either share the default group. Groups differ only where the
policy makes them differ (``prefer_local_region``); identical resources are
serialized once and their bytes shared by every group.
"""

from __future__ import annotations

import structlog

from xds_server import type_urls
from xds_server.builders import NodeGroup, build_resources
from xds_server.membership import Membership
from xds_server.metrics import XdsMetrics
from xds_server.policy import Policy
from xds_server.policy_loader import PolicyBundle
from xds_server.snapshot import DEFAULT_GROUP, Interned, Snapshot, build_snapshot
from xds_server.snapshot_cache import SnapshotCache

log = structlog.get_logger()


class SnapshotPublisher:
    """Holds the inputs; rebuilds and publishes snapshots whenever one changes."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics, bundle: PolicyBundle) -> None:
        self._cache = cache
        self._metrics = metrics
        self._bundle = bundle
        self._membership: Membership = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._interned: Interned = {}
        self._groups: set[str] = {DEFAULT_GROUP}

    @property
    def policy(self) -> Policy:
        return self._bundle.policy

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    @property
    def membership(self) -> Membership:
        return self._membership

    @property
    def snapshot(self) -> Snapshot | None:
        """The default group's snapshot."""
        return self._snapshots.get(DEFAULT_GROUP)

    def snapshot_of(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group)

    def set_bundle(self, bundle: PolicyBundle) -> None:
        self._bundle = bundle
        self.publish()

    def set_membership(self, membership: Membership) -> None:
        self._membership = membership
        self.publish()

    def ensure_group(self, group: str) -> None:
        """Build a snapshot for a group seen for the first time."""
        if group not in self._groups:
            self._groups.add(group)
            self._publish_group(group)
            self._prune()

    def forget_group(self, group: str) -> None:
        """The last Envoy of ``group`` left: stop building its snapshot (built again if
        one comes back). Groups therefore follow the Envoys connected, not all ever seen."""
        if group != DEFAULT_GROUP and group in self._groups:
            self._groups.discard(group)
            self._snapshots.pop(group, None)
            self._cache.drop(group)
            self._prune()

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def publish(self) -> None:
        changed = [group for group in sorted(self._groups) if self._publish_group(group)]
        self._prune()
        if not changed:
            return
        self._metrics.endpoints.clear()
        for pool in self.policy.pools:
            endpoints = self._membership.get(pool.name, ())
            draining = sum(1 for endpoint in endpoints if endpoint.draining)
            self._metrics.endpoints.labels(pool.name, "healthy").set(len(endpoints) - draining)
            self._metrics.endpoints.labels(pool.name, "draining").set(draining)
        snapshot = self._snapshots[changed[0]]
        log.info(
            "snapshot_published",
            groups=changed,
            versions={
                type_urls.SHORT_NAMES[url]: typed.version for url, typed in snapshot.types.items()
            },
        )

    def _publish_group(self, group: str) -> bool:
        resources = build_resources(
            self.policy, self._membership, self._bundle.certificates, NodeGroup.from_key(group)
        )
        previous = self._snapshots.get(group)
        snapshot = build_snapshot(resources, previous, self._interned)
        if previous is not None and snapshot.types == previous.types:
            return False
        self._snapshots[group] = snapshot
        self._cache.set(snapshot, group)
        self._metrics.snapshots.inc()
        return True

    def _prune(self) -> None:
        live = {
            (url, name, resource.version)
            for snapshot in self._snapshots.values()
            for url, typed in snapshot.types.items()
            for name, resource in typed.resources.items()
        }
        for key in [key for key in self._interned if key not in live]:
            del self._interned[key]
