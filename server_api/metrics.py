"""Prometheus metrics of one server API instance, on a registry of its own (every name is
in ``docs/metrics.md``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from server_api.calls import METHODS
from wsfleet.metrics_registry import new_registry

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = new_registry("server_api")
        self.calls = Counter(
            "wsfleet_api_calls_total",
            "Server API calls by method and HTTP status",
            ["method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wsfleet_api_call_seconds",
            "Server API calls: from the request read to the answer",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for method in (*METHODS, "unknown"):  # every method from the start (status: as seen)
            self.calls.labels(method, "200")
            self.latency.labels(method)
        self.store_errors = Counter(
            "wsfleet_api_store_errors_total",
            "Redis calls of the server API that failed",
            registry=self.registry,
        )
