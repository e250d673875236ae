"""Prometheus metrics of one gateway sidecar, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    """Every metric the sidecar exports at ``GET /metrics`` (admin port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "wsfleet_gateway_connections",
            "Open client connections",
            ["transport"],
            registry=self.registry,
        )
        self.handshakes = Counter(
            "wsfleet_gateway_handshakes_total",
            "Handshakes by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.closes = Counter(
            "wsfleet_gateway_closes_total",
            "Closed connections by close code",
            ["code"],
            registry=self.registry,
        )
        self.messages_in = Counter(
            "wsfleet_gateway_messages_in_total", "Messages from clients", registry=self.registry
        )
        self.messages_out = Counter(
            "wsfleet_gateway_messages_out_total", "Messages to clients", registry=self.registry
        )
        self.bytes_in = Counter(
            "wsfleet_gateway_bytes_in_total", "Payload bytes from clients", registry=self.registry
        )
        self.bytes_out = Counter(
            "wsfleet_gateway_bytes_out_total", "Payload bytes to clients", registry=self.registry
        )
        self.registry_errors = Counter(
            "wsfleet_gateway_registry_errors_total",
            "Failed registry writes",
            registry=self.registry,
        )
        self.backends_up = Gauge(
            "wsfleet_gateway_backends_up", "Backend links that are up", registry=self.registry
        )
