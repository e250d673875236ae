"""The fleet page's summary (pure), its shared gathering, and ``wsfleet status``'s text."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

import pytest

from wsfleet.registry import PodRecord, PodState
from wsfleet_tools.status_command import render_summary
from xds_server import type_urls
from xds_server.certificates import LoadedCertificate
from xds_server.drain_records import DrainRecord
from xds_server.fleet_events import SharedSummary
from xds_server.fleet_summary import (
    FleetInputs,
    RedisHealth,
    counter_rate,
    ping_rtt_view,
    policy_version,
    quantile,
    sample_of,
    summarize,
)
from xds_server.ledger import Ledger
from xds_server.outcomes import Acked, Nacked, Sent

NOW = 1_700_000_000.0


def pod(pod_id: str, state: PodState = PodState.SERVING, conns: int = 0) -> PodRecord:
    return PodRecord(
        pod_id, "gateways", "127.0.0.1", 9000, 9100, state, conns=conns, heartbeat_at=NOW - 1
    )


def stats(
    accepted: int = 0,
    refused: dict[str, int] | None = None,
    websocket: int = 0,
    drain: dict[str, Any] | None = None,
    rtt: tuple[list[float], list[int], int] = ([0.001, 0.01, 0.1], [0, 0, 0], 0),
) -> dict[str, Any]:
    bounds, cumulative, count = rtt
    return {
        "connections": {"websocket": websocket},
        "handshakes": {"accepted": accepted, **(refused or {})},
        "ping_rtt": {"bounds_s": bounds, "cumulative": cumulative, "count": count, "sum_s": 0},
        "drain": drain or {"state": "serving", "total": 0, "closed": 0, "left": 0, "eta_s": 0},
    }


def inputs(**overrides: Any) -> FleetInputs:
    base = FleetInputs(
        now=NOW,
        at=100.0,
        pods=[],
        pod_stats={},
        pod_errors={},
        drains=[],
        nodes=[],
        snapshot_versions={},
        policy_json='{"pools": []}',
        certificates=[],
        redis=RedisHealth(ok=True, latency_ms=0.5),
    )
    return dataclasses.replace(base, **overrides)


def test_a_counter_rate_needs_a_recent_previous_sample_and_survives_a_restart() -> None:
    assert counter_rate(None, 10, 1.0) is None
    assert counter_rate(10, 30, 2.0) == 10.0
    assert counter_rate(50, 6, 2.0) == 3.0  # the pod restarted: counted from zero
    assert counter_rate(10, 30, 60.0) is None  # a minute-old sample is no "now"
    assert counter_rate(10, 30, 0.0) is None


def test_quantiles_come_from_the_cumulative_buckets() -> None:
    bounds, cumulative = [0.001, 0.01, 0.1], [50, 90, 99]
    assert quantile(bounds, cumulative, 100, 0.5) == 0.001
    assert quantile(bounds, cumulative, 100, 0.9) == 0.01
    assert quantile(bounds, cumulative, 100, 0.99) == 0.1
    assert quantile(bounds, cumulative, 100, 0.999) is None  # beyond the last bound
    assert quantile(bounds, [0, 0, 0], 0, 0.5) is None
    view = ping_rtt_view({"bounds_s": bounds, "cumulative": cumulative, "count": 100})
    assert [b["count"] for b in view["buckets"]] == [50, 40, 9, 1]
    assert view["buckets"][-1]["le_s"] is None
    assert (view["p50_s"], view["p90_s"], view["count"]) == (0.001, 0.01, 100)


def test_pods_show_live_figures_refusals_and_rates_between_two_samples() -> None:
    pods = [pod("b", conns=1), pod("a", conns=0), pod("c")]
    first = inputs(
        pods=pods,
        pod_stats={
            "a": stats(accepted=10, refused={"bad_token": 2, "full": 0}, websocket=3),
            "b": stats(),
        },
        pod_errors={"c": "no answer within 0.8 s"},
    )
    summary = summarize(first, None)
    assert [p["pod_id"] for p in summary["pods"]] == ["a", "b", "c"]
    a, _, c = summary["pods"]
    assert a["connections"] == 3  # the pod's own count, not the registry's (older)
    assert a["refused"] == {"bad_token": 2}  # reasons that never happened are left out
    assert a["accepted_per_s"] is None  # one sample: no rate yet
    assert c["stats_error"] == "no answer within 0.8 s" and c["ping_rtt"] is None
    second = dataclasses.replace(
        first,
        at=102.0,
        pod_stats={"a": stats(accepted=30, refused={"bad_token": 6, "full": 1}, websocket=3)},
    )
    summary = summarize(second, sample_of(first))
    a = summary["pods"][0]
    assert a["accepted_per_s"] == 10.0
    assert a["refused_per_s"] == {"bad_token": 2.0, "full": 0.5}
    assert summary["totals"]["accepted_per_s"] == 10.0
    assert summary["totals"]["refused"] == {"bad_token": 6, "full": 1}
    assert summary["totals"]["connections"] == 3 + 1 + 0  # b and c: the registry's count


def test_a_fleet_drain_shows_its_progress_against_the_budget() -> None:
    draining = {"state": "draining", "total": 4, "closed": 1, "left": 3, "budget_s": 60}
    record = DrainRecord("d1", [pod("a")], 60.0, started_at=NOW - 15)
    summary = summarize(
        inputs(
            pods=[pod("a", PodState.DRAINING), pod("b")],
            pod_stats={"a": stats(drain=draining), "b": stats()},
            drains=[record],
        ),
        None,
    )
    (drain,) = summary["drains"]
    assert drain["drain_id"] == "d1" and drain["state"] == "running"
    assert drain["pods"] == {"a": "draining"}
    assert (drain["total"], drain["closed"], drain["left"]) == (4, 1, 3)
    assert drain["budget_used"] == pytest.approx(0.25)
    assert summary["pods"][0]["drain"]["state"] == "draining"


def test_a_drain_record_is_finished_once_every_pod_drained_or_failed_and_sums_them() -> None:
    record = DrainRecord("d2", [pod("a"), pod("b"), pod("c")], 30.0, started_at=NOW - 5)
    record.progress["a"] = {"state": "drained", "total": 3, "left": 0, "eta_s": 0}
    record.progress["b"] = {"state": "draining", "total": 5, "left": 2, "eta_s": 4.5}
    assert not record.finished  # b drains, c not heard from
    assert {k: v for k, v in record.to_json().items() if k != "pods"} == {
        "drain_id": "d2",
        "state": "running",
        "budget_s": 30.0,
        "started_at": NOW - 5,
        "total": 8,
        "closed": 6,
        "left": 2,
        "eta_s": 4.5,
    }
    record.progress["b"] = {"state": "drained", "total": 5, "left": 0}
    record.progress["c"] = {"state": "error", "error": "pod did not answer"}
    assert record.finished and record.to_json()["state"] == "done"


def test_finished_drains_leave_the_page_after_a_while_and_a_pods_own_drain_shows() -> None:
    old = DrainRecord("old", [pod("gone")], 10.0, started_at=NOW - 3600)
    recent = DrainRecord("recent", [pod("gone")], 10.0, started_at=NOW - 20)
    own = {"state": "draining", "total": 2, "closed": 0, "left": 2, "budget_s": 30}
    own["started_at"] = NOW - 3
    summary = summarize(
        inputs(
            pods=[pod("b", PodState.DRAINING)],
            pod_stats={"b": stats(drain=own)},
            drains=[old, recent],
        ),
        None,
    )
    assert [(d["drain_id"], d["state"]) for d in summary["drains"]] == [
        ("recent", "done"),
        (None, "running"),
    ]
    assert summary["drains"][1]["pods"] == {"b": "draining"}
    assert summary["drains"][1]["budget_used"] == pytest.approx(0.1)


def test_envoys_show_acked_versions_and_their_last_nack() -> None:
    ledger = Ledger()
    node = ledger.open("envoy-1", "wsfleet", "sotw", "1.40.0", NOW - 60)
    node.apply(Sent(type_urls.CLUSTER, "c1", "n1"), NOW - 59)
    node.apply(Acked(type_urls.CLUSTER, "c1"), NOW - 59)
    node.apply(Nacked(type_urls.LISTENER, "l2", "bad port"), NOW - 30)
    node.apply(Nacked(type_urls.CLUSTER, "c2", "bad cluster"), NOW - 10)
    drain = {"node": "envoy-1", "budget_s": 40, "started_at": NOW - 10}
    summary = summarize(
        inputs(
            nodes=ledger.nodes(),
            snapshot_versions={"cds": "c2"},
            envoy_drains={"envoy-1": drain},
        ),
        None,
    )
    (envoy,) = summary["envoys"]
    assert envoy["drain"]["budget_used"] == pytest.approx(0.25)
    assert envoy["acked"] == {"cds": "c1", "lds": ""}
    assert envoy["last_nack"]["message"] == "bad cluster"
    assert envoy["last_nack"]["type"] == "cds"
    assert summary["policy"]["snapshot_versions"] == {"cds": "c2"}


def test_the_policy_version_names_the_policy_and_certificates_show_their_expiry() -> None:
    assert policy_version('{"a": 1}') == policy_version('{"a": 1}')
    assert policy_version('{"a": 1}') != policy_version('{"a": 2}')
    cert = LoadedCertificate(
        "public", "", "", "CN=example", datetime.datetime.fromtimestamp(NOW + 86400, datetime.UTC)
    )
    summary = summarize(
        inputs(certificates=[cert], redis=RedisHealth(ok=False, error="refused")), None
    )
    assert summary["certificates"] == [
        {
            "name": "public",
            "subject": "CN=example",
            "not_after": NOW + 86400,
            "expires_in_s": 86400.0,
        }
    ]
    assert summary["redis"] == {"ok": False, "latency_ms": None, "error": "refused"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_every_watcher_shares_one_gathering_per_interval() -> None:
    clock, release = FakeClock(), asyncio.Event()
    calls = []

    async def gather() -> FleetInputs:
        calls.append(clock.now)
        await release.wait()
        return inputs(pods=[pod("a")], pod_stats={"a": stats(accepted=len(calls))})

    shared = SharedSummary(gather, interval_s=1.0, clock=clock)
    watchers = [asyncio.create_task(shared.latest()) for _ in range(5)]
    await asyncio.sleep(0)
    watchers[0].cancel()  # one leaves mid-gathering: the others still get it
    release.set()
    answers = await asyncio.gather(*watchers[1:])
    assert len(calls) == 1 and all(a is answers[0] for a in answers)
    clock.now = 0.5
    assert await shared.latest() is answers[0]  # fresh enough: no new gathering
    clock.now = 1.2
    later = await shared.latest()
    assert len(calls) == 2 and later["pods"][0]["handshakes"]["accepted"] == 2


def test_the_terminal_shows_pods_drains_envoys_and_certificates() -> None:
    ledger = Ledger()
    node = ledger.open("envoy-1", "wsfleet", "delta", "1.40.0", NOW)
    node.apply(Acked(type_urls.CLUSTER, "c7"), NOW)
    node.apply(Nacked(type_urls.LISTENER, "l3", "port taken"), NOW)
    draining = {"state": "draining", "total": 4, "closed": 1, "left": 3, "budget_s": 60}
    cert = LoadedCertificate(
        "public", "", "", "CN=x", datetime.datetime.fromtimestamp(NOW + 3 * 86400, datetime.UTC)
    )
    summary = summarize(
        inputs(
            pods=[pod("sidecar-1", PodState.DRAINING), pod("sidecar-2")],
            pod_stats={
                "sidecar-1": stats(
                    websocket=3, drain=draining, refused={"full": 2}, rtt=([0.001, 0.01], [4, 5], 5)
                ),
                "sidecar-2": stats(websocket=1),
            },
            drains=[DrainRecord("d9", [pod("sidecar-1")], 60.0, started_at=NOW - 30)],
            nodes=ledger.nodes(),
            certificates=[cert],
        ),
        None,
    )
    text = render_summary(summary)
    lines = text.splitlines()
    assert f"policy {policy_version(inputs().policy_json)}" in lines[0]
    assert "redis ok (0.5 ms)" in lines[0]
    assert "pods 2 (1 serving) · connections 4" in lines[1]
    pod_line = next(line for line in lines if line.startswith("sidecar-1 "))
    assert pod_line.split()[:5] == ["sidecar-1", "draining", "3", "-", "full"]
    assert "1.0ms/10.0ms" in pod_line
    drain_line = next(line for line in lines if line.startswith("d9 "))
    assert "30/60s (50%)" in drain_line and "1/4" in drain_line
    envoy_line = next(line for line in lines if line.startswith("envoy-1 "))
    assert "cds=c7" in envoy_line and "lds l3: port taken" in envoy_line
    assert "certificate public: expires in 3.0 days (RENEW)" in lines
    empty = render_summary(summarize(inputs(), None))
    for words in ("no pods registered", "no drain in progress", "no Envoy connected"):
        assert words in empty
