"""Capacity model: from measured per-connection costs to pods, Envoys and Redis per region.

Every input is a measurement (``benchmarks/results/*.json`` from this repo's benchmarks, or
the figures recorded in docs/capacity.md, which are the defaults), and the plan names where
each came from (file, date, figure); the model only divides, adds headroom and rounds up.
It also chooses the gateways' Redis batch spacing: the smallest (from the gateways' default
up) that keeps the round trips every shard receives within a quarter of its core, and
refuses a fleet for which none does. ``wsfleet capacity --connections 5000000`` prints the
plan and a Kubernetes HorizontalPodAutoscaler for the gateway pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wsfleet.settings import SidecarSettings

GIB = 1024**3


def _gateway_default(name: str) -> Any:
    """A gateway setting's default: the plan assumes what a gateway does unless told."""
    [setting] = [setting for setting in fields(SidecarSettings) if setting.name == name]
    return setting.default


ROUND_TRIP_SHARE_TARGET = 0.25
"""The share of a Redis shard's core the plan lets round trips take (headroom included):
the batch spacing is raised until they fit in it."""
MAX_BATCH_SPACING_S = 0.05
"""The widest batch spacing the plan will choose: a v1 message waits for its batch before
it is sent, so the spacing adds up to this to its delivery (keep-alive target: 30 ms p99)."""


@dataclass(frozen=True)
class Source:
    """Where a figure was measured."""

    where: str  # the document or results file that records it
    date: str  # when (the commit that recorded it, or the result's own time stamp)
    figure: str  # which figure of it, and how it was taken


_LOAD_RUN = "docs/load-and-chaos.md, `python -m benchmarks load`"
_SCALE_RUN = (
    "docs/load-and-chaos.md,"
    " `python -m benchmarks scale --v1 --steps 10000,25000,50000 --message-rate 0 --measure 5`"
)
RECORDED: dict[str, Source] = {
    "sidecar_kb_per_connection": Source(
        _SCALE_RUN, "2026-12-08", "gateway RSS per held v1 connection at 50,000 (4 gateways)"
    ),
    "sidecar_base_mb": Source(
        "docs/gateway.md, `idle-connections`", "2026-11-29", "a sidecar holding nothing"
    ),
    "sidecar_handshakes_per_s": Source(
        "docs/load-and-chaos.md, `load --pin --rate 1500`",
        "2026-12-05",
        "a paced surge of 1,500 handshakes/s, as the load generators see it, keeps the one"
        " core every server process shares (sidecar, Envoy, Redis) ~86 % busy: what a client"
        " gets from about a full core (the sidecar's own CPU per handshake, 3,061/s, leaves"
        " out the kernel and Redis work a handshake causes)",
    ),
    "sidecar_messages_per_s": Source(
        "docs/load-and-chaos.md, `load --pin`",
        "2026-12-05",
        "echoed v1 messages / the sidecar's CPU seconds",
    ),
    "envoy_kb_per_connection": Source(
        _SCALE_RUN, "2026-12-08", "Envoy RSS per proxied v1 WebSocket at 50,000 (7 Envoys)"
    ),
    "envoy_handshakes_per_s_per_worker": Source(
        _LOAD_RUN, "2026-11-29", "handshakes / Envoy's CPU seconds during the surge"
    ),
    "redis_bytes_per_connection": Source(
        _SCALE_RUN, "2026-12-08", "Redis RSS per held v1 connection at 50,000 (registry + session)"
    ),
    "redis_bytes_per_replayed_message": Source(
        _LOAD_RUN, "2026-11-29", "Redis RSS growth / echoed messages kept for replay"
    ),
    "redis_ops_per_s_per_core": Source(
        _LOAD_RUN, "2026-11-29", "pipelined commands / Redis CPU seconds"
    ),
    "redis_round_trip_us": Source(
        "docs/capacity.md, `python -m benchmarks redis-round-trips`",
        "2026-12-05",
        "Redis CPU per pipeline received (pipelines of 1 to 1,000 calls, fitted)",
    ),
    "fds_per_sidecar_connection": Source("by construction", "-", "one socket"),
    "fds_per_envoy_connection": Source("by construction", "-", "downstream + upstream socket"),
}


@dataclass(frozen=True)
class Measured:
    """Per-connection and per-process costs, as measured on the benchmark machine."""

    # `python -m benchmarks load` (protocol v1 through Envoy; the sidecar's figures from the
    # --pin run of docs/load-and-chaos.md, the rest from the 8,000-connection run) and
    # `idle-connections`, on the 2-core development machine; see docs/capacity.md
    sidecar_kb_per_connection: float = 4.8  # scale --v1: gateway RSS per held connection
    sidecar_base_mb: float = 72.8  # idle-connections: a sidecar holding nothing
    sidecar_handshakes_per_s: float = 1500.0  # load --rate 1500: at a full core, client-side
    sidecar_messages_per_s: float = 17007.0  # load: echoed messages per sidecar CPU-second
    envoy_kb_per_connection: float = 52.2  # scale --v1: Envoy RSS per proxied WebSocket
    envoy_handshakes_per_s_per_worker: float = 1990.0  # load: per Envoy CPU-second
    redis_bytes_per_connection: float = 1244.0  # scale --v1: registry + session, Redis RSS
    redis_bytes_per_replayed_message: float = 856.0  # load: Redis RSS per kept message
    redis_ops_per_s_per_core: float = 261_000.0  # load: pipelined commands per Redis CPU-s
    redis_round_trip_us: float = 17.2  # redis-round-trips: Redis CPU per pipeline received
    fds_per_sidecar_connection: int = 1
    fds_per_envoy_connection: int = 2
    sources: Mapping[str, Source] = field(default_factory=lambda: dict(RECORDED), compare=False)

    def figures(self) -> dict[str, float]:
        """Every input by name (the sources aside)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}


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
    redis_shards: int  # >= 1: a plan that cannot fit is refused, never planned
    redis_batch_spacing_s: float  # the gateways' --redis-batch-spacing the plan chose
    redis_batch_spacing_asked_s: float  # the smallest spacing it was allowed to choose
    redis_round_trips_per_shard_s: int  # every pod's every batch reaches every shard
    redis_round_trip_share: float  # of one shard's core, headroom included
    redis_batch_spacing_for_quarter_s: float | None  # the spacing for a share <= 25 % (None: none)
    fleet_handshakes_per_s: float
    full_reconnect_s: float  # every client of the region reconnecting at once
    pod_loss_reconnect_s: float | None  # one pod's clients over the survivors (None: no survivor)
    inputs: dict[str, dict[str, Any]]  # name -> value, where, date, figure

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_measured(paths: list[Path]) -> Measured:
    """Defaults, overridden by whatever the given benchmark results contain (each figure
    then names the file, the result's time stamp and where in it)."""
    measured = Measured()
    for path in paths:
        document = json.loads(path.read_text())
        name = document.get("benchmark")
        date = str(document.get("at", "undated"))
        figures: dict[str, float] = {}
        where: dict[str, str] = {}
        if name == "idle_connections":
            sidecar = document["results"]["sidecar"]
            largest = max(sidecar["steps"], key=lambda step: step["held"])
            figures = {
                "sidecar_kb_per_connection": largest["kb_per_connection"],
                "sidecar_base_mb": sidecar["base_rss_mb"],
                "sidecar_handshakes_per_s": min(s["handshakes_per_s"] for s in sidecar["steps"]),
            }
            where = {
                "sidecar_kb_per_connection": f"KB per connection at {largest['held']:,} held",
                "sidecar_base_mb": "RSS holding nothing",
                "sidecar_handshakes_per_s": "the slowest step's handshakes/s (client side)",
            }
        elif name == "scale":
            # memory per held connection at the largest step (flat from 10k to 50k); the
            # gateway's and Redis's only from a v1 run (a raw one keeps no session state)
            largest = max(document["steps"], key=lambda step: step["held"])
            idle, options = largest["kb_per_connection_idle"], document["options"]
            held = f"{largest['held']:,} held, {options['envoys']} Envoys"
            figures = {"envoy_kb_per_connection": float(idle["envoy"])}
            where = {"envoy_kb_per_connection": f"kb_per_connection_idle.envoy ({held})"}
            if options.get("v1"):
                figures["sidecar_kb_per_connection"] = float(idle["sidecar"])
                figures["redis_bytes_per_connection"] = float(idle["redis"]) * 1024
                where["sidecar_kb_per_connection"] = f"kb_per_connection_idle.sidecar ({held}, v1)"
                where["redis_bytes_per_connection"] = (
                    f"kb_per_connection_idle.redis x 1024 ({held}, v1)"
                )
        elif name in ("load", "redis_round_trips") and "measured" in document:
            # `load` measures handshakes per sidecar CPU-second: not what a client gets
            # from a full core (the kernel's and Redis's share is left out), so not used
            known = set(Measured().figures()) - {"sidecar_handshakes_per_s"}
            figures = {k: float(v) for k, v in document["measured"].items() if k in known}
            where = {k: f"measured.{k}" for k in figures}
        else:
            raise ValueError(
                f"{path}: not a result of `python -m benchmarks idle-connections`, `load`,"
                " `redis-round-trips` or `scale`"
            )
        sources = {**measured.sources, **{k: Source(str(path), date, where[k]) for k in figures}}
        measured = replace(measured, **figures, sources=sources)  # type: ignore[arg-type]
    return measured


def _round_trip_share(
    pods: int, persists_per_pod: float, spacing_s: float, flush_s: float, round_trip_s: float
) -> float:
    """Of one shard's core: every pod's replay batches (at most one per spacing, fewer if
    it has fewer messages) and pong flushes, each a round trip to every shard."""
    batches = min(persists_per_pod, 1 / spacing_s) if spacing_s > 0 else persists_per_pod
    return pods * (batches + 1 / flush_s) * round_trip_s


def choose_batch_spacing(
    pods: int,
    persists_per_pod: float,
    round_trip_s: float,
    connection_flush_s: float,
    smallest_s: float,
) -> float:
    """The gateways' Redis batch spacing: ``smallest_s`` if the round trips fit in
    :data:`ROUND_TRIP_SHARE_TARGET` of a shard there, else the smallest whole millisecond
    that makes them fit. Raises ValueError (with the reason) when no spacing up to
    :data:`MAX_BATCH_SPACING_S` does: no number of shards would carry that fleet."""
    flushes = pods / connection_flush_s * round_trip_s
    if _round_trip_share(pods, persists_per_pod, smallest_s, connection_flush_s, round_trip_s) <= (
        ROUND_TRIP_SHARE_TARGET
    ):
        return smallest_s
    if flushes >= ROUND_TRIP_SHARE_TARGET:
        raise ValueError(
            f"{pods:,} pods' pong flushes alone take {flushes:.0%} of every Redis shard's core"
            f" (more than {ROUND_TRIP_SHARE_TARGET:.0%}): no batch spacing helps; plan fewer,"
            " larger pods (--pod-memory-gib) or raise the gateways' --connection-flush"
        )
    batches = ROUND_TRIP_SHARE_TARGET / (pods * round_trip_s) - 1 / connection_flush_s
    spacing = max(smallest_s, math.ceil(1000 / batches - 1e-9) / 1000)
    if spacing > MAX_BATCH_SPACING_S:
        raise ValueError(
            f"{pods:,} pods need a Redis batch spacing of {1000 / batches:.0f} ms to keep the"
            f" round trips within {ROUND_TRIP_SHARE_TARGET:.0%} of every shard's core; the"
            f" plan stops at {MAX_BATCH_SPACING_S * 1000:g} ms (a v1 message waits for its"
            " batch): plan fewer, larger pods (--pod-memory-gib)"
        )
    return spacing


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
    """What ``connections`` need. ``redis_batch_spacing_s`` is the smallest spacing the
    plan may choose (the gateways' default unless told); ValueError: no plan fits."""
    if connections < 1 or not 0 <= headroom < 1 or message_rate < 0:
        raise ValueError("connections >= 1, 0 <= headroom < 1, message_rate >= 0")
    if redis_batch_spacing_s < 0 or connection_flush_s <= 0:
        raise ValueError("redis batch spacing >= 0, connection flush > 0")
    usable = 1 - headroom
    by_memory = (
        (pod_memory_gib * 1024 - measured.sidecar_base_mb)
        * 1024
        / measured.sidecar_kb_per_connection
    )
    by_fds = pod_fd_limit / measured.fds_per_sidecar_connection - 100
    by_cpu = measured.sidecar_messages_per_s / message_rate if message_rate else math.inf
    per_pod = int(min(by_memory, by_fds, by_cpu) * usable)
    if per_pod < 1:
        raise ValueError(
            f"a {pod_memory_gib:g} GiB pod holds no connection after the sidecar's"
            f" {measured.sidecar_base_mb:g} MB and the headroom: raise --pod-memory-gib"
        )
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
    round_trip_s = measured.redis_round_trip_us / 1e6 * (1 + headroom)
    spacing = choose_batch_spacing(
        pods, persists_per_pod, round_trip_s, connection_flush_s, redis_batch_spacing_s
    )
    share = _round_trip_share(pods, persists_per_pod, spacing, connection_flush_s, round_trip_s)
    round_trips = share / round_trip_s
    command_cores = (touches + persists) * (1 + headroom) / measured.redis_ops_per_s_per_core
    quarter = ROUND_TRIP_SHARE_TARGET / (pods * round_trip_s) - 1 / connection_flush_s
    fleet_handshakes = min(
        pods * measured.sidecar_handshakes_per_s,
        envoys * envoy_workers * measured.envoy_handshakes_per_s_per_worker,
    )
    inputs = {
        name: {"value": value, **asdict(measured.sources[name])}
        for name, value in measured.figures().items()
    }
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
        # the round trips leave of it (at most ROUND_TRIP_SHARE_TARGET: see above)
        redis_shards=max(1, math.ceil(command_cores / (1 - share))),
        redis_batch_spacing_s=spacing,
        redis_batch_spacing_asked_s=redis_batch_spacing_s,
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
        inputs=inputs,
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


def _spacing(result: Plan) -> str:
    ms = result.redis_batch_spacing_s * 1000
    text = f"batches {ms:g} ms apart"
    if result.redis_batch_spacing_s > result.redis_batch_spacing_asked_s:
        text += (
            f", raised from {result.redis_batch_spacing_asked_s * 1000:g} ms: set the gateways'"
            f" --redis-batch-spacing {ms:g} (WSFLEET_REDIS_BATCH_SPACING_S={ms / 1000:g})"
        )
    else:
        text += ", --redis-batch-spacing"
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
        f"  Redis ops/s        {result.redis_ops_per_s:>10,}   ({result.redis_shards:,} shards)",
        f"  Redis round trips  {result.redis_round_trips_per_shard_s:>10,}/s per shard"
        f" ({result.redis_round_trip_share:.0%} of its core; {_spacing(result)})",
        f"  handshakes/s       {result.fleet_handshakes_per_s:>10,.0f}   (the whole pool)",
        f"  full reconnect     {result.full_reconnect_s:>10,} s   (every client at once: size the"
        " backoff window above this)",
        f"  one pod lost       {_or_none(result.pod_loss_reconnect_s):>10} s   "
        "(its clients onto the survivors: the SDK's first reconnect window, base_s, at least)",
        "",
        "measured inputs (value, where, when, which figure):",
        *(
            f"  {key:<34} {item['value']:>9g}  {item['where']} ({item['date']}): {item['figure']}"
            for key, item in result.inputs.items()
        ),
        "",
        "autoscaling (scale-up lead time: a new pod takes sessions as soon as it is HEALTHY in"
        " EDS, ~1 s after it registers; scale before a surge, never during a drain):",
        "",
        hpa_manifest(result),
    ]
    return "\n".join(lines)
