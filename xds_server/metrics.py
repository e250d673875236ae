"""Prometheus metrics of the control plane, on a registry of its own (every name is in
``docs/metrics.md``), and its readiness check.

Fleet-level series (``wsfleet_fleet_*``: the registry's view of the gateways) are exported
by ONE replica, the holder of a short lease in the registry (:class:`FleetLease`), so that
``sum()`` over all control-plane replicas counts each gateway once. Everything else is
about the replica itself (its Envoys, its pushes, its drains) and is exported by each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wsfleet.metrics_registry import new_registry
from wsfleet.registry import PodRecord, Registry, RegistryUnavailable
from xds_server import type_urls
from xds_server.certificates import LoadedCertificate
from xds_server.ledger import Ledger

# the fleet gauges read the registry at most this often, however often /metrics is scraped
FLEET_GAUGES_MAX_AGE_S = 5.0
# the fleet-metrics lease outlives the scrape interval (up to a minute) of its holder; a
# holder that stops has another replica take over within this
FLEET_LEASE_TTL_S = 90.0
FLEET_LEASE = "fleet_metrics"  # the lease's name in the registry
READY_CACHE_S = 1.0  # /readyz pings the registry at most this often
PUSH_TYPES = ("cds", "eds", "lds", "rds", "sds")  # exported at 0 from the start


class XdsMetrics:
    """Every metric the xDS server exports at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = new_registry("control_plane")
        self.connected_nodes = Gauge(
            "wsfleet_xds_connected_nodes",
            "Envoys with an open ADS stream",
            ["protocol"],
            registry=self.registry,
        )
        self.refused_nodes = Counter(
            "wsfleet_xds_refused_nodes_total",
            "ADS streams refused: the node was not the one its client certificate names",
            registry=self.registry,
        )
        self.pushes = Counter(
            "wsfleet_xds_pushes_total", "xDS responses sent", ["type"], registry=self.registry
        )
        self.acks = Counter(
            "wsfleet_xds_acks_total", "xDS responses ACKed", ["type"], registry=self.registry
        )
        self.nacks = Counter(
            "wsfleet_xds_nacks_total", "xDS responses NACKed", ["type"], registry=self.registry
        )
        self.push_to_ack = Histogram(
            "wsfleet_xds_push_to_ack_seconds",
            "Seconds from a push to its ACK",
            ["type"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.snapshots = Counter(
            "wsfleet_xds_snapshots_total",
            "Snapshots built (any content change)",
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "wsfleet_xds_endpoints",
            "Endpoints served per pool and health",
            ["pool", "health"],
            registry=self.registry,
        )
        self.policy_reloads = Counter(
            "wsfleet_xds_policy_reloads_total",
            "Policy file loads by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.registry_errors = Counter(
            "wsfleet_xds_registry_errors_total", "Failed registry reads", registry=self.registry
        )
        self.fleet_connections = Gauge(
            "wsfleet_fleet_connections",
            "Client connections per gateway, from the registry (lease holder only)",
            ["gateway", "region"],
            registry=self.registry,
        )
        self.fleet_transports = Gauge(
            "wsfleet_fleet_connections_by_transport",
            "Client connections per transport, from the registry (lease holder only)",
            ["transport"],
            registry=self.registry,
        )
        self.fleet_pods = Gauge(
            "wsfleet_fleet_pods",
            "Registered gateway pods by state (lease holder only)",
            ["state"],
            registry=self.registry,
        )
        self.fleet_leader = Gauge(
            "wsfleet_xds_fleet_metrics_leader",
            "1 on the replica that holds the fleet-metrics lease (exports wsfleet_fleet_*)",
            registry=self.registry,
        )
        self.drains_in_progress = Gauge(
            "wsfleet_xds_drains_in_progress",
            "Fleet drains this replica runs that have not finished",
            registry=self.registry,
        )
        for short in PUSH_TYPES:
            for family in (self.pushes, self.acks, self.nacks, self.push_to_ack):
                family.labels(short)
        for protocol in ("sotw", "delta"):
            self.connected_nodes.labels(protocol)
        for outcome in ("applied", "rejected"):
            self.policy_reloads.labels(outcome)

    def clear_fleet(self) -> None:
        """No fleet series: another replica holds the lease (or none could be taken)."""
        self.fleet_connections.clear()
        self.fleet_transports.clear()
        self.fleet_pods.clear()

    def set_fleet(self, pods: list[PodRecord]) -> None:
        """Fleet aggregates from the registry's pod records (see :class:`FleetGauges`)."""
        self.clear_fleet()
        transports: dict[str, int] = {}
        states: dict[str, int] = {}
        for pod in pods:
            self.fleet_connections.labels(pod.pod_id, pod.region).set(pod.conns)
            states[pod.state.value] = states.get(pod.state.value, 0) + 1
            for name, count in pod.connections_by_transport().items():
                transports[name] = transports.get(name, 0) + count
        for name, count in transports.items():
            self.fleet_transports.labels(name).set(count)
        for state, count in states.items():
            self.fleet_pods.labels(state).set(count)

    def watch_rejections(self, rejected: Callable[[], int]) -> None:
        """Export how many pod records read did not verify (read at scrape time)."""
        self.registry.register(_RejectionCollector(rejected))

    def watch(
        self, ledger: Ledger, certificates: Callable[[], Mapping[str, LoadedCertificate]]
    ) -> None:
        """Export the per-node ledger and certificate expiry, read at scrape time."""
        self.registry.register(_LedgerCollector(ledger, certificates))


class FleetGauges:
    """Keeps the fleet gauges of ``/metrics`` (pods, connections per pod and transport)
    from the registry, read at most once every ``max_age_s``.

    ``/metrics`` is open to anyone: were each scrape to read every pod record, anyone
    could make the control plane load Redis as often as they like. Scrapes within
    ``max_age_s`` of the last read (or of a failed one) show its values; scrapes that
    arrive during a read wait for it instead of starting their own.
    """

    def __init__(
        self,
        metrics: XdsMetrics,
        read_pods: Callable[[], Awaitable[list[PodRecord]]],
        max_age_s: float = FLEET_GAUGES_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
        hold_lease: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``hold_lease``: takes or keeps the fleet-metrics lease (:meth:`FleetLease.hold`);
        None: this replica always exports (one replica, or tests)."""
        self._metrics = metrics
        self._read_pods = read_pods
        self._hold_lease = hold_lease
        self._max_age_s = max_age_s
        self._clock = clock
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the registry if the last read is older than ``max_age_s``."""
        async with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._max_age_s:
                return
            self._read_at = now  # a failed read waits its turn too: an outage costs no more
            try:
                leader = self._hold_lease is None or await self._hold_lease()
                self._metrics.fleet_leader.set(1 if leader else 0)
                if not leader:
                    self._metrics.clear_fleet()
                    return
                pods = await self._read_pods()
            except RegistryUnavailable:
                self._metrics.registry_errors.inc()
                return
            self._metrics.set_fleet(pods)


class _RejectionCollector(Collector):
    def __init__(self, rejected: Callable[[], int]) -> None:
        self._rejected = rejected

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "wsfleet_xds_rejected_pod_records",
            "Pod records read from the registry that were not signed with the registry key "
            "(ignored: not routed to, not called)",
        )
        family.add_metric([], self._rejected())
        yield family


class _LedgerCollector(Collector):
    def __init__(
        self, ledger: Ledger, certificates: Callable[[], Mapping[str, LoadedCertificate]]
    ) -> None:
        self._ledger = ledger
        self._certificates = certificates

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        seen = GaugeMetricFamily(
            "wsfleet_xds_node_last_seen_age_seconds",
            "Seconds since a connected Envoy last sent a request",
            labels=["node_id"],
        )
        in_sync = GaugeMetricFamily(
            "wsfleet_xds_node_in_sync",
            "1 if the Envoy ACKed the last version sent of this type, else 0",
            labels=["node_id", "type"],
        )
        nacked = GaugeMetricFamily(
            "wsfleet_xds_node_nacks",
            "NACKs from this Envoy for this type since its stream opened",
            labels=["node_id", "type"],
        )
        last_nack = GaugeMetricFamily(
            "wsfleet_xds_node_last_nack_timestamp_seconds",
            "Unix time of this Envoy's last NACK of this type (types NACKed at least once)",
            labels=["node_id", "type"],
        )
        out_of_sync = 0
        for node in self._ledger.connected():
            seen.add_metric([node.node_id], now - node.last_seen)
            node_synced = True
            for url, status in node.types.items():
                short = type_urls.SHORT_NAMES.get(url, "other")
                synced = status.acked_version == status.sent_version and status.acked_at >= (
                    status.nacked_at
                )
                node_synced = node_synced and synced
                in_sync.add_metric([node.node_id, short], 1.0 if synced else 0.0)
                nacked.add_metric([node.node_id, short], float(status.nacks))
                if status.nacks:
                    last_nack.add_metric([node.node_id, short], status.nacked_at)
            out_of_sync += not node_synced
        expiry = GaugeMetricFamily(
            "wsfleet_xds_certificate_expiry_timestamp_seconds",
            "Unix time the certificate served over SDS expires (its notAfter)",
            labels=["certificate"],
        )
        for name, cert in self._certificates().items():
            expiry.add_metric([name], cert.not_after.timestamp())
        nodes_out_of_sync = GaugeMetricFamily(
            "wsfleet_xds_nodes_out_of_sync",
            "Connected Envoys with a type whose last version sent is not ACKed (or NACKed)",
        )
        nodes_out_of_sync.add_metric([], out_of_sync)
        yield from (seen, in_sync, nacked, last_nack, nodes_out_of_sync, expiry)


class FleetLease:
    """The fleet-metrics lease (:data:`FLEET_LEASE`), held in the registry
    (:meth:`~wsfleet.registry.Registry.hold_lease`): its holder exports the fleet series.
    Taken when free or expired, kept by each refresh; a holder that stops refreshing loses
    it after ``ttl_s``. Registry unreachable: not held (no fleet series: by the time it
    answers again another replica may hold the lease)."""

    def __init__(self, registry: Registry, holder: str, ttl_s: float = FLEET_LEASE_TTL_S) -> None:
        self._registry = registry
        self._holder = holder
        self._ttl_s = ttl_s

    async def hold(self) -> bool:
        """Take or keep the lease; True if this replica holds it."""
        try:
            return await self._registry.hold_lease(FLEET_LEASE, self._holder, self._ttl_s)
        except RegistryUnavailable:
            return False


class Readiness:
    """``GET /readyz`` of the control plane: ready once its first snapshot is built and
    the registry answers a ping. The answer is kept ``cache_s``, so that however often it
    is asked, the registry is pinged at most once per ``cache_s``."""

    def __init__(
        self,
        has_snapshot: Callable[[], bool],
        ping: Callable[[], Awaitable[None]],
        cache_s: float = READY_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._has_snapshot = has_snapshot
        self._ping = ping
        self._cache_s = cache_s
        self._clock = clock
        self._answer: tuple[bool, str] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, str]:
        """(ready, reason)."""
        async with self._lock:
            now = self._clock()
            if self._answer is not None and now - self._at < self._cache_s:
                return self._answer
            self._answer, self._at = await self._fresh(), now
            return self._answer

    async def _fresh(self) -> tuple[bool, str]:
        if not self._has_snapshot():
            return False, "no snapshot built yet"
        try:
            await self._ping()
        except RegistryUnavailable as exc:
            return False, f"the registry does not answer: {exc}"
        return True, "ready"
