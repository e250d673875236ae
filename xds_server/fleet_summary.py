"""One summary of the whole fleet, for the fleet page and ``wsfleet status``.

Pure: it takes what the control plane knows (registry pods, the Envoy ledger, fleet
drains, the policy and its certificates, Redis's health) and what each pod reported about
itself (``GET /stats`` on its admin port), and returns one JSON-ready dict. Rates
(handshakes per second) come from two samples of the pods' counters; the I/O that gathers
them is :mod:`xds_server.fleet_events`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsfleet.registry import PodRecord
from xds_server import type_urls
from xds_server.certificates import LoadedCertificate
from xds_server.drain_records import FINISHED_DRAIN_STATES, DrainRecord
from xds_server.ledger import NodeStatus

ACCEPTED = "accepted"  # the handshake outcome that is not a refusal
MAX_RATE_WINDOW_S = 10.0
"""A rate needs two samples at most this far apart: an older one (nobody watched for a
while) would give an average over minutes, not what is happening now."""
RECENT_DRAIN_S = 300.0  # a finished fleet drain stays on the page this long
QUANTILES = (("p50_s", 0.5), ("p90_s", 0.9), ("p99_s", 0.99))


@dataclass(frozen=True)
class PodSample:
    """Each pod's handshake counters (by outcome), at one monotonic time."""

    at: float
    handshakes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class RedisHealth:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class FleetInputs:
    """Everything one summary is made of, read at wall time ``now`` (monotonic ``at``)."""

    now: float
    at: float
    pods: Sequence[PodRecord]
    pod_stats: Mapping[str, Mapping[str, Any]]  # by pod id: the pod's GET /stats answer
    pod_errors: Mapping[str, str]  # by pod id: why its stats are missing
    drains: Sequence[DrainRecord]
    nodes: Sequence[NodeStatus]
    snapshot_versions: Mapping[str, str]  # the default group's, by short type name
    policy_json: str
    certificates: Sequence[LoadedCertificate]
    redis: RedisHealth
    envoy_drains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by node id


def policy_version(policy_json: str) -> str:
    """A short, stable name for a policy: the start of its canonical JSON's SHA-256."""
    return hashlib.sha256(policy_json.encode()).hexdigest()[:12]


def counter_rate(previous: int | None, current: int, seconds: float) -> float | None:
    """Per-second increase of a counter; a counter that went down (the pod restarted)
    counts from zero. None without a previous value or a usable window."""
    if previous is None or not 0 < seconds <= MAX_RATE_WINDOW_S:
        return None
    increase = current - previous if current >= previous else current
    return increase / seconds


def quantile(
    bounds: Sequence[float], cumulative: Sequence[int], count: int, q: float
) -> float | None:
    """The bucket bound below which ``q`` of the observations fall (None: no observation,
    or beyond the last finite bound)."""
    if count <= 0:
        return None
    wanted = q * count
    for bound, seen in zip(bounds, cumulative, strict=True):
        if seen >= wanted:
            return bound
    return None


def ping_rtt_view(histogram: Mapping[str, Any]) -> dict[str, Any]:
    bounds = [float(b) for b in histogram.get("bounds_s", [])]
    cumulative = [int(c) for c in histogram.get("cumulative", [])]
    count = int(histogram.get("count", 0))
    view: dict[str, Any] = {"count": count}
    for name, q in QUANTILES:
        view[name] = quantile(bounds, cumulative, count, q)
    counts: list[dict[str, Any]] = []
    below = 0
    for bound, seen in zip(bounds, cumulative, strict=True):
        counts.append({"le_s": bound, "count": seen - below})
        below = seen
    counts.append({"le_s": None, "count": count - below})  # beyond the last bound
    view["buckets"] = counts
    return view


def sample_of(inputs: FleetInputs) -> PodSample:
    """The counters this summary's rates will be measured against next time."""
    return PodSample(
        inputs.at,
        {
            pod_id: {k: int(v) for k, v in stats.get("handshakes", {}).items()}
            for pod_id, stats in inputs.pod_stats.items()
        },
    )


def _pod_view(pod: PodRecord, inputs: FleetInputs, previous: PodSample | None) -> dict[str, Any]:
    stats = inputs.pod_stats.get(pod.pod_id)
    view: dict[str, Any] = {
        "pod_id": pod.pod_id,
        "pool": pod.pool,
        "state": pod.state.value,
        "address": f"{pod.host}:{pod.port}",
        "region": pod.region,
        "zone": pod.zone,
        "heartbeat_age_s": round(inputs.now - pod.heartbeat_at, 3),
        # the registry's count is as old as the last heartbeat; the pod's own is live
        "connections": pod.conns,
        "connections_by_transport": pod.connections_by_transport(),
        "stats_error": inputs.pod_errors.get(pod.pod_id),
        "handshakes": {},
        "accepted_per_s": None,
        "refused": {},
        "refused_per_s": {},
        "ping_rtt": None,
        "drain": None,
    }
    if stats is None:
        return view
    by_transport = {str(k): int(v) for k, v in stats.get("connections", {}).items()}
    view["connections_by_transport"] = by_transport
    view["connections"] = sum(by_transport.values())
    handshakes = {str(k): int(v) for k, v in stats.get("handshakes", {}).items()}
    before = previous.handshakes.get(pod.pod_id) if previous is not None else None
    window = inputs.at - previous.at if previous is not None else 0.0

    def rate(outcome: str) -> float | None:
        last = None if before is None else before.get(outcome, 0)
        return counter_rate(last, handshakes.get(outcome, 0), window)

    view["handshakes"] = handshakes
    view["accepted_per_s"] = rate(ACCEPTED)
    refused = {k: v for k, v in sorted(handshakes.items()) if k != ACCEPTED and v > 0}
    view["refused"] = refused
    view["refused_per_s"] = {reason: rate(reason) for reason in refused}
    view["ping_rtt"] = ping_rtt_view(stats.get("ping_rtt", {}))
    drain = stats.get("drain") or {}
    if drain.get("state") in ("draining", "drained"):
        view["drain"] = dict(drain)
    return view


def _budget_used(elapsed_s: float, budget_s: float) -> float:
    return 1.0 if budget_s <= 0 else min(1.0, max(0.0, elapsed_s / budget_s))


def _drain_views(pods: list[dict[str, Any]], inputs: FleetInputs) -> list[dict[str, Any]]:
    """Fleet drains (started through the admin API) still running or finished lately,
    then drains of single pods nobody started through it (SIGTERM, the pod's own API)."""
    by_id = {pod["pod_id"]: pod for pod in pods}
    views: list[dict[str, Any]] = []
    covered: set[str] = set()
    for drain in inputs.drains:
        progress: dict[str, dict[str, Any]] = {}
        for record in drain.pods:
            live = by_id.get(record.pod_id)
            if live is not None and live["drain"] is not None:
                progress[record.pod_id] = live["drain"]
            elif live is None:  # the pod went away: its drain is over
                progress[record.pod_id] = {"state": "drained", "left": 0}
            else:
                progress[record.pod_id] = dict(drain.progress.get(record.pod_id, {}))
        finished = all(p.get("state") in FINISHED_DRAIN_STATES for p in progress.values())
        elapsed = inputs.now - drain.started_at
        if finished and elapsed > RECENT_DRAIN_S:
            continue
        covered.update(progress)
        total = sum(int(p.get("total", 0)) for p in progress.values())
        left = sum(int(p.get("left", 0)) for p in progress.values())
        views.append(
            {
                "drain_id": drain.drain_id,
                "kind": "fleet",
                "state": "done" if finished else "running",
                "pods": {pod_id: p.get("state", "unknown") for pod_id, p in progress.items()},
                "budget_s": drain.budget_s,
                "started_at": drain.started_at,
                "elapsed_s": round(elapsed, 3),
                "budget_used": _budget_used(elapsed, drain.budget_s),
                "total": total,
                "closed": max(0, total - left),
                "left": left,
            }
        )
    for pod in pods:
        drain = pod["drain"]
        if drain is None or pod["pod_id"] in covered or drain.get("state") != "draining":
            continue
        budget = float(drain.get("budget_s", 0.0))
        elapsed = inputs.now - float(drain.get("started_at", inputs.now))
        view: dict[str, Any] = {
            "drain_id": None,
            "kind": "pod",
            "state": "running",
            "pods": {pod["pod_id"]: "draining"},
            "budget_s": budget,
            "started_at": drain.get("started_at"),
            "elapsed_s": round(elapsed, 3),
            "budget_used": _budget_used(elapsed, budget),
            "total": int(drain.get("total", 0)),
            "closed": int(drain.get("closed", 0)),
            "left": int(drain.get("left", 0)),
        }
        views.append(view)
    return views


def _envoy_drain(drain: Mapping[str, Any] | None, now: float) -> dict[str, Any] | None:
    """An Envoy's drain (as the Envoy drains report it), with its budget used so far."""
    if drain is None:
        return None
    view = dict(drain)
    started, budget = drain.get("started_at"), drain.get("budget_s")
    if isinstance(started, int | float) and isinstance(budget, int | float):
        view["elapsed_s"] = round(now - started, 3)
        view["budget_used"] = _budget_used(now - started, float(budget))
    return view


def _envoy_view(node: NodeStatus, inputs: FleetInputs) -> dict[str, Any]:
    """What one Envoy ACKed of each type (compare with the policy's snapshot versions; an
    Envoy of another region's node group has versions of its own) and its last NACK."""
    acked: dict[str, str] = {}
    last_nack: dict[str, Any] | None = None
    for url, status in sorted(node.types.items()):
        name = type_urls.SHORT_NAMES.get(url, url)
        acked[name] = status.acked_version
        if status.nacks and (last_nack is None or status.nacked_at > last_nack["at"]):
            last_nack = {
                "type": name,
                "version": status.nacked_version,
                "message": status.nack_message,
                "at": status.nacked_at,
            }
    return {
        "node_id": node.node_id,
        "cluster": node.cluster,
        "protocol": node.protocol,
        "envoy_version": node.envoy_version,
        "connected": node.connected,
        "connected_at": node.connected_at,
        "acked": acked,
        "last_nack": last_nack,
        "drain": _envoy_drain(inputs.envoy_drains.get(node.node_id), inputs.now),
    }


def summarize(inputs: FleetInputs, previous: PodSample | None) -> dict[str, Any]:
    """The fleet as one JSON-ready dict; ``previous`` is the last summary's
    :func:`sample_of` (for rates)."""
    pods = [_pod_view(pod, inputs, previous) for pod in sorted(inputs.pods, key=_pod_key)]
    refused: dict[str, int] = {}
    for pod in pods:
        for reason, count in pod["refused"].items():
            refused[reason] = refused.get(reason, 0) + count
    rates = [pod["accepted_per_s"] for pod in pods if pod["accepted_per_s"] is not None]
    return {
        "at": inputs.now,
        "policy": {
            "version": policy_version(inputs.policy_json),
            "snapshot_versions": dict(inputs.snapshot_versions),
        },
        "redis": {
            "ok": inputs.redis.ok,
            "latency_ms": inputs.redis.latency_ms,
            "error": inputs.redis.error,
        },
        "totals": {
            "pods": len(pods),
            "serving": sum(1 for pod in pods if pod["state"] == "serving"),
            "connections": sum(pod["connections"] for pod in pods),
            "accepted_per_s": sum(rates) if rates else None,
            "refused": dict(sorted(refused.items())),
        },
        "pods": pods,
        "drains": _drain_views(pods, inputs),
        "envoys": [_envoy_view(node, inputs) for node in inputs.nodes],
        "certificates": [
            {
                "name": cert.name,
                "subject": cert.subject,
                "not_after": cert.not_after.timestamp(),
                "expires_in_s": round(cert.not_after.timestamp() - inputs.now, 3),
            }
            for cert in sorted(inputs.certificates, key=lambda c: c.name)
        ],
    }


def _pod_key(pod: PodRecord) -> tuple[str, str]:
    return pod.pool, pod.pod_id
