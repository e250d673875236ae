"""The Prometheus registry every wsfleet process starts its ``/metrics`` from.

Each process keeps a registry of its own (never the library's global one, so that tests
can build many), and each starts with the same things: the standard ``process_*`` series
(resident memory, open and maximum file descriptors, CPU, start time), ``python_info``,
the ``python_gc_*`` series and ``wsfleet_build_info{component, version}``. No counter or
histogram exports a ``_created`` series (it doubles the series count and no dashboard
reads it): :func:`new_registry` turns them off for the whole process before any metric
exists, and every process builds its registry with it.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from wsfleet import __version__

# Labels a Kubernetes scrape (or Prometheus itself) attaches to every series: a series of
# ours that used one of them would clash with it (and be renamed ``exported_<label>``).
RESERVED_LABELS = frozenset({"pod", "namespace", "instance", "job", "container", "service"})

COMPONENTS = ("gateway", "control_plane", "server_api")


def new_registry(component: str) -> CollectorRegistry:
    """A registry with the process, platform and GC collectors and
    ``wsfleet_build_info{component, version} 1``; ``_created`` series off process-wide."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r} (one of {', '.join(COMPONENTS)})")
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge(
        "wsfleet_build_info",
        "Always 1: which wsfleet component and version this process runs",
        ["component", "version"],
        registry=registry,
    ).labels(component, __version__).set(1)
    return registry
