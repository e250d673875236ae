"""Capacity model: from measured per-connection costs to pods, Envoys and Redis per region.

Every input is a measurement (``benchmarks/results/*.json`` from this repo's benchmarks, or
the figures recorded in docs/capacity.md, which are the defaults); the model only divides,
adds headroom and rounds up. ``wsfleet capacity --connections 5000000`` prints the plan
and a Kubernetes HorizontalPodAutoscaler for the gateway pool.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from wsfleet.settings import SidecarSettings

GIB = 1024**3


def _gateway_default(name: str) -> Any:
    """A gateway setting's default: the plan assumes what a gateway does unless told."""
    [field] = [field for field in fields(SidecarSettings) if field.name == name]
    return field.default


@dataclass(frozen=True)
class Measured:
    """Per-connection and per-process costs, as measured on the benchmark machine."""

    # `python -m benchmarks load` (protocol v1 through Envoy; the sidecar's figures from the
    # --pin run of docs/load-and-chaos.md, the rest from the 8,000-connection run) and
    # `idle-connections`, on the 2-core development machine; see docs/capacity.md
    sidecar_kb_per_connection: float = 17.8  # load: sidecar RSS per held connection
    sidecar_base_mb: float = 72.8  # idle-connections: a sidecar holding nothing
    sidecar_handshakes_per_s: float = 3061.0  # load: handshakes per sidecar CPU-second
    sidecar_messages_per_s: float = 17007.0  # load: echoed messages per sidecar CPU-second
    envoy_kb_per_connection: float = 54.5  # load: Envoy RSS per proxied WebSocket
    envoy_handshakes_per_s_per_worker: float = 1990.0  # load: per Envoy CPU-second
    redis_bytes_per_connection: float = 1396.0  # load: registry + session, Redis RSS
    redis_bytes_per_replayed_message: float = 856.0  # load: Redis RSS per kept message
    redis_ops_per_s_per_core: float = 261_000.0  # load: pipelined commands per Redis CPU-s
    redis_round_trip_us: float = 17.2  # redis-round-trips: Redis CPU per pipeline received
    fds_per_sidecar_connection: int = 1
    fds_per_envoy_connection: int = 2


@dataclass(frozen=True)
class Plan:
    """What one region needs."""

    connections: int
    message_rate_per_connection: float
    headroom: float
    connections_per_pod: int
    pods: int
    pod_memory_gib: float
    envoy_instances: int
    envoy_memory_gib: float
    redis_memory_gib: float
    redis_ops_per_s: int
    redis_shards: int  # 0: round trips alone fill a shard (raise the batch spacing)
    redis_batch_spacing_s: float  # the gateways' --redis-batch-spacing
    redis_round_trips_per_shard_s: int  # every pod's every batch reaches every shard
    redis_round_trip_share: float  # of one shard's core, headroom included
    redis_batch_spacing_for_quarter_s: float | None  # the spacing for a share <= 25 % (None: none)
    fleet_handshakes_per_s: float
    full_reconnect_s: float  # every client of the region reconnecting at once
    pod_loss_reconnect_s: float | None  # one pod's clients over the survivors (None: no survivor)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_measured(paths: list[Path]) -> Measured:
    """Defaults, overridden by whatever the given benchmark results contain."""
    measured = Measured()
    for path in paths:
        document = json.loads(path.read_text())
        name = document.get("benchmark")
        if name == "idle_connections":
            sidecar = document["results"]["sidecar"]
            largest = max(sidecar["steps"], key=lambda step: step["held"])
            measured = replace(
                measured,
                sidecar_kb_per_connection=largest["kb_per_connection"],
                sidecar_base_mb=sidecar["base_rss_mb"],
                sidecar_handshakes_per_s=min(s["handshakes_per_s"] for s in sidecar["steps"]),
            )
        elif name in ("load", "redis_round_trips") and "measured" in document:
            known = {f.name for f in fields(Measured)}
            figures = {k: float(v) for k, v in document["measured"].items() if k in known}
            measured = replace(measured, **figures)  # type: ignore[arg-type]
        else:
            raise ValueError(
                f"{path}: not a result of `python -m benchmarks idle-connections`, `load`"
                " or `redis-round-trips`"
            )
    return measured


def plan(
    connections: int,
    measured: Measured,
    message_rate: float = 0.05,  # messages per connection per second, both ways
    headroom: float = 0.3,
    pod_memory_gib: float = 2.0,
    pod_fd_limit: int = 65536,
    envoy_memory_gib: float = 8.0,
    envoy_workers: int = 4,
    heartbeat_interval_s: float = _gateway_default("heartbeat_interval_s"),
    replay_max_messages: int = _gateway_default("replay_max_messages"),
    replay_max_age_s: float = _gateway_default("replay_max_age_s"),
    redis_batch_spacing_s: float = _gateway_default("redis_batch_spacing_s"),
    connection_flush_s: float = _gateway_default("connection_flush_s"),
) -> Plan:
    if connections < 1 or not 0 <= headroom < 1 or message_rate < 0:
        raise ValueError("connections >= 1, 0 <= headroom < 1, message_rate >= 0")
    usable = 1 - headroom
    by_memory = (
        (pod_memory_gib * 1024 - measured.sidecar_base_mb)
        * 1024
        / measured.sidecar_kb_per_connection
    )
    by_fds = pod_fd_limit / measured.fds_per_sidecar_connection - 100
    by_cpu = measured.sidecar_messages_per_s / message_rate if message_rate else math.inf
    per_pod = int(min(by_memory, by_fds, by_cpu) * usable)
    pods = math.ceil(connections / per_pod)
    envoy_by_memory = envoy_memory_gib * GIB / (measured.envoy_kb_per_connection * 1024)
    envoy_by_fds = 1_000_000 / measured.fds_per_envoy_connection
    envoys = math.ceil(connections / (min(envoy_by_memory, envoy_by_fds) * usable))
    kept = min(replay_max_messages, message_rate * replay_max_age_s)  # per session, at most
    replay_bytes = connections * kept * measured.redis_bytes_per_replayed_message
    redis_bytes = connections * measured.redis_bytes_per_connection + replay_bytes
    touches = connections / heartbeat_interval_s * 3  # HSET + 2 PEXPIRE per pong, pipelined
    persists = connections * message_rate * 4  # XADD + HSET + 2 PEXPIRE per message
    # On a Redis Cluster a batch (a pod's replay persists, its pongs) carries keys of every
    # slot, so it is a round trip to every shard: adding shards does not spread them.
    persists_per_pod = connections / pods * message_rate
    replay_batches = (
        min(persists_per_pod, 1 / redis_batch_spacing_s)
        if redis_batch_spacing_s > 0
        else persists_per_pod
    )
    round_trips = pods * (replay_batches + 1 / connection_flush_s)
    round_trip_s = measured.redis_round_trip_us / 1e6 * (1 + headroom)
    share = round_trips * round_trip_s
    command_cores = (touches + persists) * (1 + headroom) / measured.redis_ops_per_s_per_core
    quarter = 0.25 / (pods * round_trip_s) - 1 / connection_flush_s  # replay batches/s
    fleet_handshakes = min(
        pods * measured.sidecar_handshakes_per_s,
        envoys * envoy_workers * measured.envoy_handshakes_per_s_per_worker,
    )
    return Plan(
        connections=connections,
        message_rate_per_connection=message_rate,
        headroom=headroom,
        connections_per_pod=per_pod,
        pods=pods,
        pod_memory_gib=pod_memory_gib,
        envoy_instances=envoys,
        envoy_memory_gib=envoy_memory_gib,
        redis_memory_gib=round(redis_bytes / GIB * (1 + headroom), 2),
        redis_ops_per_s=int((touches + persists) * (1 + headroom)),
        # Redis runs commands on one core: a shard per core's worth of commands, in what
        # the round trips leave of it
        redis_shards=math.ceil(command_cores / (1 - share)) if share < 1 else 0,
        redis_batch_spacing_s=redis_batch_spacing_s,
        redis_round_trips_per_shard_s=int(round_trips),
        redis_round_trip_share=round(share, 3),
        redis_batch_spacing_for_quarter_s=round(1 / quarter, 4) if quarter > 0 else None,
        fleet_handshakes_per_s=fleet_handshakes,
        full_reconnect_s=round(connections / fleet_handshakes, 1),
        pod_loss_reconnect_s=round(
            per_pod / min(fleet_handshakes, (pods - 1) * measured.sidecar_handshakes_per_s), 2
        )
        if pods > 1
        else None,
    )


def hpa_manifest(result: Plan, namespace: str = "wsfleet", name: str = "gateways") -> str:
    """A HorizontalPodAutoscaler on connections per pod (a Prometheus adapter metric)."""
    target = int(result.connections_per_pod)
    return f"""apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
  namespace: {namespace}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: {max(2, math.ceil(result.pods * 0.5))}
  maxReplicas: {math.ceil(result.pods * 1.5)}
  metrics:
    - type: Pods
      pods:
        metric: {{name: wsfleet_gateway_connections}}
        target: {{type: AverageValue, averageValue: "{target}"}}
  behavior:
    scaleUp:   # a surge: add pods fast, new sessions land on them at once (Maglev)
      stabilizationWindowSeconds: 0
      policies: [{{type: Percent, value: 50, periodSeconds: 30}}]
    scaleDown: # removing a pod drains its clients: slowly, one pod at a time
      stabilizationWindowSeconds: 600
      policies: [{{type: Pods, value: 1, periodSeconds: 120}}]
"""


def _or_none(value: float | None) -> str:
    return f"{value:,}" if value is not None else "n/a (one pod)"


def _shards(result: Plan) -> str:
    spacing = result.redis_batch_spacing_for_quarter_s
    quarter = f"{spacing * 1000:.1f} ms" if spacing is not None else "(none: fewer pods per shard)"
    if result.redis_shards == 0:
        return f"round trips alone fill a shard: --redis-batch-spacing {quarter} or more"
    text = f"{result.redis_shards} shards"
    if result.redis_round_trip_share > 0.25:
        text += f"; round trips under 25 %: --redis-batch-spacing {quarter}"
    return text


def render(result: Plan, measured: Measured) -> str:
    lines = [
        f"capacity plan for {result.connections:,} connections per region "
        f"({result.message_rate_per_connection:g} msg/s each, {result.headroom:.0%} headroom)",
        "",
        f"  gateway pods       {result.pods:>10,}   "
        f"({result.connections_per_pod:,} connections each, {result.pod_memory_gib:g} GiB)",
        f"  Envoy instances    {result.envoy_instances:>10,}   "
        f"({result.envoy_memory_gib:g} GiB each)",
        f"  Redis memory       {result.redis_memory_gib:>10,} GiB",
        f"  Redis ops/s        {result.redis_ops_per_s:>10,}   ({_shards(result)})",
        f"  Redis round trips  {result.redis_round_trips_per_shard_s:>10,}/s per shard"
        f" ({result.redis_round_trip_share:.0%} of its core; batches"
        f" {result.redis_batch_spacing_s * 1000:g} ms apart, --redis-batch-spacing)",
        f"  handshakes/s       {result.fleet_handshakes_per_s:>10,.0f}   (the whole pool)",
        f"  full reconnect     {result.full_reconnect_s:>10,} s   (every client at once: size the"
        " backoff window above this)",
        f"  one pod lost       {_or_none(result.pod_loss_reconnect_s):>10} s   "
        "(its clients onto the survivors: the SDK's first reconnect window, base_s, at least)",
        "",
        "measured inputs:",
        *(f"  {key:<36} {value}" for key, value in asdict(measured).items()),
        "",
        "autoscaling (scale-up lead time: a new pod takes sessions as soon as it is HEALTHY in"
        " EDS, ~1 s after it registers; scale before a surge, never during a drain):",
        "",
        hpa_manifest(result),
    ]
    return "\n".join(lines)
