"""Every process's metrics follow the conventions and are the ones docs/metrics.md lists."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server_api.metrics import ApiMetrics
from sidecar.metrics import GatewayMetrics, RedisTimer, RoundTripSampler
from wsfleet.metrics_registry import RESERVED_LABELS, new_registry
from wsfleet.registry import PodRecord, RegistryUnavailable
from xds_server.metrics import FleetGauges, Readiness, XdsMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
TYPES = {"C": "counter", "G": "gauge", "H": "histogram"}


def _documented() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) from the table of docs/metrics.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `(wsfleet_\w+)` \| ([CGH]) \|([^|]*)\|", line)
        if match:
            labels = {label.strip() for label in match[3].split(",") if label.strip()}
            rows[match[1]] = (TYPES[match[2]], labels)
    return rows


def _registries() -> list[CollectorRegistry]:
    gateway = GatewayMetrics()
    gateway.watch_gateway(lambda: (0, 0), lambda: {"websocket": 1})
    gateway.watch_channels(lambda: (0, 0, 0, 0, 0, 0, {}))
    gateway.identify("gw-1", "gateways", "local", "a")
    xds = XdsMetrics()
    xds.set_fleet([PodRecord("gw-1", "gateways", "127.0.0.1", 1, 2, conns=3)])
    xds.watch_rejections(lambda: 0)
    return [gateway.registry, xds.registry, ApiMetrics().registry]


def _exported() -> dict[str, tuple[str, set[str]]]:
    found: dict[str, tuple[str, set[str]]] = {}
    for registry in _registries():
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            if family.name.startswith("wsfleet_"):
                name = family.name + ("_total" if family.type == "counter" else "")
                labels = {k for s in family.samples for k in s.labels if k != "le"}
                found[name] = (family.type, labels)
    return found


def test_every_exported_metric_is_documented_with_its_type_and_labels_and_vice_versa() -> None:
    documented, exported = _documented(), _exported()
    assert len(documented) > 50
    # the ledger's per-node series need a connected Envoy (and a certificate) to appear
    per_node = {
        "wsfleet_xds_node_last_seen_age_seconds",
        "wsfleet_xds_node_in_sync",
        "wsfleet_xds_node_nacks",
        "wsfleet_xds_node_last_nack_timestamp_seconds",
        "wsfleet_xds_nodes_out_of_sync",
        "wsfleet_xds_certificate_expiry_timestamp_seconds",
    }
    assert set(exported) == set(documented) - per_node
    for name, (kind, labels) in exported.items():
        assert documented[name][0] == kind, name
        if labels:  # a family with no series yet (endpoints before a snapshot) shows none
            assert documented[name][1] == labels, name


def test_names_follow_the_conventions_and_no_label_clashes_with_a_scrape_label() -> None:
    for name, (kind, labels) in {**_documented(), **_exported()}.items():
        assert re.fullmatch(r"wsfleet_[a-z0-9_]+", name), name
        assert (kind == "counter") == name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        assert not re.search(r"_(in|out)_total$|_ms$|_millis|_kb$|_mb$", name), name
        assert not labels & RESERVED_LABELS, (name, labels)


def test_no_created_series_and_the_standard_process_series_in_every_process() -> None:
    for registry in _registries():
        text = generate_latest(registry).decode()
        assert "_created" not in text
        for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
            assert f"\n{name} " in text, name
        assert "python_gc_collections_total" in text
    components = {
        registry.get_sample_value("wsfleet_build_info", {"component": c, "version": "0.1.0"})
        for registry, c in zip(
            _registries(), ("gateway", "control_plane", "server_api"), strict=True
        )
    }
    assert components == {1.0}
    with pytest.raises(ValueError, match="unknown component"):
        new_registry("gatway")


def test_labelled_counters_exist_at_zero_before_their_first_event() -> None:
    gateway = GatewayMetrics()
    gateway.watch_channels(lambda: (0, 0, 0, 0, 0, 0, {}))
    r = gateway.registry
    assert r.get_sample_value("wsfleet_gateway_handshakes_total", {"outcome": "accepted"}) == 0
    assert r.get_sample_value("wsfleet_gateway_handshakes_total", {"outcome": "expired"}) == 0
    for code in ("1000", "1006", "1012", "1013", "4401"):
        assert r.get_sample_value("wsfleet_gateway_closes_total", {"code": code}) == 0, code
    refused = {"reason": "permission_denied"}
    assert r.get_sample_value("wsfleet_gateway_channel_requests_refused_total", refused) == 0
    redis = {"operation": "replay_persist"}
    assert r.get_sample_value("wsfleet_gateway_redis_batch_seconds_count", redis) == 0
    xds = XdsMetrics().registry
    assert xds.get_sample_value("wsfleet_xds_nacks_total", {"type": "lds"}) == 0
    assert xds.get_sample_value("wsfleet_xds_policy_reloads_total", {"outcome": "rejected"}) == 0
    api = ApiMetrics().registry
    assert (
        api.get_sample_value("wsfleet_api_calls_total", {"method": "publish", "status": "200"}) == 0
    )


def test_drain_gauges_say_when_a_drain_started_and_its_budget_only_while_it_runs() -> None:
    metrics = GatewayMetrics()
    r = metrics.registry
    metrics.set_drain("draining", 1_700_000_000.0, 60.0)
    assert r.get_sample_value("wsfleet_gateway_drain_started_timestamp_seconds") == 1.7e9
    assert r.get_sample_value("wsfleet_gateway_drain_budget_seconds") == 60
    assert r.get_sample_value("wsfleet_gateway_state", {"state": "draining"}) == 1
    assert r.get_sample_value("wsfleet_gateway_state", {"state": "serving"}) == 0
    metrics.set_drain("drained", 1_700_000_000.0, 60.0)
    assert r.get_sample_value("wsfleet_gateway_drain_started_timestamp_seconds") == 0
    assert r.get_sample_value("wsfleet_gateway_state", {"state": "drained"}) == 1


def test_the_round_trip_sampler_times_one_batch_until_an_answer_for_one_of_its_sessions() -> None:
    now, seen = [0.0], []
    sampler = RoundTripSampler(clock=lambda: now[0], max_wait_s=10.0)
    sampler.observe = seen.append
    sampler.sent(["a", "b"])
    now[0] = 0.5
    sampler.sent(["c"])  # not timed: one batch at a time
    sampler.received(["c"])
    assert seen == []
    now[0] = 0.75
    sampler.received(["x", "b"])
    assert seen == [0.75]
    sampler.received(["a"])  # answered already: no second sample
    assert seen == [0.75]
    sampler.sent(["d"])
    now[0] = 20.0
    sampler.sent(["e"])  # "d" got no answer within 10 s: dropped, "e" is timed
    now[0] = 20.25
    sampler.received(["d", "e"])
    assert seen == [0.75, 0.25]
    sampler.sent(["f"])
    sampler.reset()  # the stream went away
    sampler.received(["f"])
    assert seen == [0.75, 0.25]


def test_the_redis_timer_observes_failed_calls_too() -> None:
    now, seen = [0.0], []
    timer = RedisTimer(clock=lambda: now[0])
    timer.observe = lambda operation, seconds: seen.append((operation, seconds))
    with pytest.raises(RegistryUnavailable), timer.time("connections_add"):
        now[0] = 2.0
        raise RegistryUnavailable("down")
    assert seen == [("connections_add", 2.0)]


class _Registry:
    def __init__(self) -> None:
        self.pings = 0
        self.down = False

    async def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise RegistryUnavailable("connection refused")

    async def list_pods(self) -> list[PodRecord]:
        return [PodRecord("gw-1", "gateways", "127.0.0.1", 1, 2, conns=3)]


async def test_readiness_needs_a_snapshot_and_the_registry_and_pings_at_most_once_a_second() -> (
    None
):
    registry, snapshot, now = _Registry(), [False], [0.0]
    readiness = Readiness(lambda: snapshot[0], registry.ping, cache_s=1.0, clock=lambda: now[0])
    assert await readiness.check() == (False, "no snapshot built yet")
    snapshot[0] = True
    assert (await readiness.check())[0] is False  # the cached answer, for up to 1 s
    now[0] = 1.0
    assert await readiness.check() == (True, "ready")
    for _ in range(100):
        await asyncio.gather(*(readiness.check() for _ in range(10)))
    assert registry.pings == 1
    registry.down = True
    now[0] = 2.5
    ready, reason = await readiness.check()
    assert not ready and "registry does not answer" in reason


async def test_only_the_lease_holder_exports_the_fleet_series() -> None:
    registry, held = _Registry(), [True]

    async def hold() -> bool:
        return held[0]

    now = [0.0]
    metrics = XdsMetrics()
    gauges = FleetGauges(metrics, registry.list_pods, 5.0, lambda: now[0], hold_lease=hold)
    await gauges.refresh()
    r = metrics.registry
    assert (
        r.get_sample_value("wsfleet_fleet_connections", {"gateway": "gw-1", "region": "local"}) == 3
    )
    assert r.get_sample_value("wsfleet_xds_fleet_metrics_leader") == 1
    held[0], now[0] = False, 5.0
    await gauges.refresh()
    assert (
        r.get_sample_value("wsfleet_fleet_connections", {"gateway": "gw-1", "region": "local"})
        is None
    )
    assert r.get_sample_value("wsfleet_fleet_pods", {"state": "serving"}) is None
    assert r.get_sample_value("wsfleet_xds_fleet_metrics_leader") == 0
