"""Prometheus metrics of the control plane, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
