"""Prometheus metrics of the control plane, on a registry of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wsfleet.registry import PodRecord, RegistryUnavailable
from xds_server import type_urls
from xds_server.certificates import LoadedCertificate
from xds_server.ledger import Ledger

# the fleet gauges read the registry at most this often, however often /metrics is scraped
FLEET_GAUGES_MAX_AGE_S = 5.0


class XdsMetrics:
    """Every metric the xDS server exports at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "Client connections per pod",
            ["pod", "region"],
            registry=self.registry,
        )
        self.fleet_transports = Gauge(
            "wsfleet_fleet_connections_by_transport",
            "Client connections per transport",
            ["transport"],
            registry=self.registry,
        )
        self.fleet_pods = Gauge(
            "wsfleet_fleet_pods", "Registered gateway pods", ["state"], registry=self.registry
        )
        self.drains_in_progress = Gauge(
            "wsfleet_fleet_drains_in_progress", "Fleet drains not finished", registry=self.registry
        )

    def set_fleet(self, pods: list[PodRecord]) -> None:
        """Fleet aggregates from the registry's pod records (see :class:`FleetGauges`)."""
        self.fleet_connections.clear()
        self.fleet_transports.clear()
        self.fleet_pods.clear()
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
    ) -> None:
        self._metrics = metrics
        self._read_pods = read_pods
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
        for node in self._ledger.connected():
            seen.add_metric([node.node_id], now - node.last_seen)
            for url, status in node.types.items():
                short = type_urls.SHORT_NAMES.get(url, "other")
                synced = status.acked_version == status.sent_version and status.acked_at >= (
                    status.nacked_at
                )
                in_sync.add_metric([node.node_id, short], 1.0 if synced else 0.0)
                nacked.add_metric([node.node_id, short], float(status.nacks))
        expiry = GaugeMetricFamily(
            "wsfleet_xds_certificate_expiry_seconds",
            "Seconds until the certificate served over SDS expires",
            labels=["certificate"],
        )
        for name, cert in self._certificates().items():
            expiry.add_metric([name], cert.seconds_to_expiry())
        yield from (seen, in_sync, nacked, expiry)
