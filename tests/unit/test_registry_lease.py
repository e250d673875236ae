"""The registry's lease on the memory registry's clock (the contract's cases on every
registry are in tests/integration/test_registry_contract.py), and the control plane's
fleet-metrics lease held through it: one replica at a time exports the fleet series."""

from __future__ import annotations

from wsfleet.registry import PodRecord, RegistryUnavailable
from wsfleet.registry.memory import MemoryRegistry
from xds_server.metrics import FleetGauges, FleetLease, XdsMetrics


async def test_a_lease_expires_on_the_memory_registrys_clock() -> None:
    now = [100.0]
    registry = MemoryRegistry(clock=lambda: now[0])
    assert await registry.hold_lease("fleet_metrics", "xds-a", ttl_s=15)
    now[0] = 114.9
    assert not await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=15)
    assert await registry.hold_lease("fleet_metrics", "xds-a", ttl_s=15)  # until 129.9
    now[0] = 129.8
    assert not await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=15)
    now[0] = 129.9
    assert await registry.hold_lease("fleet_metrics", "xds-b", ttl_s=15)
    assert not await registry.hold_lease("fleet_metrics", "xds-a", ttl_s=15)


def _leader(metrics: XdsMetrics) -> float | None:
    return metrics.registry.get_sample_value("wsfleet_xds_fleet_metrics_leader")


def _serving(metrics: XdsMetrics) -> float | None:
    return metrics.registry.get_sample_value("wsfleet_fleet_pods", {"state": "serving"})


async def test_replicas_sharing_a_registry_export_the_fleet_series_one_at_a_time() -> None:
    now = [0.0]
    registry = MemoryRegistry(clock=lambda: now[0])
    await registry.put_pod(PodRecord("gw-1", "gateways", "127.0.0.1", 9000, 9001), ttl_s=1e6)
    replicas = {name: XdsMetrics() for name in ("xds-a", "xds-b")}
    gauges = {
        name: FleetGauges(
            metrics,
            registry.list_pods,
            max_age_s=5.0,
            clock=lambda: now[0],
            hold_lease=FleetLease(registry, name, ttl_s=90).hold,
        )
        for name, metrics in replicas.items()
    }
    for name in ("xds-a", "xds-b"):
        await gauges[name].refresh()
    a, b = replicas["xds-a"], replicas["xds-b"]
    assert (_leader(a), _serving(a)) == (1, 1)
    assert (_leader(b), _serving(b)) == (0, None)
    now[0] = 89.0  # a keeps it by refreshing: b is still refused past a's first 90 s
    for name in ("xds-a", "xds-b"):
        await gauges[name].refresh()
    now[0] = 95.0
    await gauges["xds-b"].refresh()
    assert (_leader(b), _serving(b)) == (0, None)
    now[0] = 179.0  # a stopped scraping at 89: its lease ended at 179
    await gauges["xds-b"].refresh()
    assert (_leader(b), _serving(b)) == (1, 1)


class _DownRegistry(MemoryRegistry):
    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        raise RegistryUnavailable("connection refused")


async def test_the_lease_is_not_held_while_the_registry_does_not_answer() -> None:
    assert not await FleetLease(_DownRegistry(), "xds-a").hold()
