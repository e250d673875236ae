"""Turns the current policy and membership into snapshots in the cache."""

from __future__ import annotations

import structlog

from xds_server import type_urls
from xds_server.builders import build_resources
from xds_server.membership import Membership
from xds_server.metrics import XdsMetrics
from xds_server.policy import Policy
from xds_server.snapshot import Snapshot, SnapshotCache, VersionClock, build_snapshot

log = structlog.get_logger()


class SnapshotPublisher:
    """Holds the inputs; rebuilds and publishes a snapshot whenever one changes."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics, policy: Policy) -> None:
        self._cache = cache
        self._metrics = metrics
        self._clock = VersionClock()
        self._policy = policy
        self._membership: Membership = {}
        self._snapshot: Snapshot | None = None

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy
        self.publish()

    def set_membership(self, membership: Membership) -> None:
        self._membership = membership
        self.publish()

    def publish(self) -> None:
        resources = build_resources(self._policy, self._membership)
        snapshot = build_snapshot(resources, self._snapshot, self._clock)
        if self._snapshot is not None and snapshot.types == self._snapshot.types:
            return
        self._snapshot = snapshot
        self._cache.set(snapshot)
        self._metrics.snapshots.inc()
        self._metrics.endpoints.clear()
        for pool in self._policy.pools:
            endpoints = self._membership.get(pool.name, ())
            draining = sum(1 for endpoint in endpoints if endpoint.draining)
            self._metrics.endpoints.labels(pool.name, "healthy").set(len(endpoints) - draining)
            self._metrics.endpoints.labels(pool.name, "draining").set(draining)
        log.info(
            "snapshot_published",
            versions={
                type_urls.SHORT_NAMES[url]: typed.version for url, typed in snapshot.types.items()
            },
        )
