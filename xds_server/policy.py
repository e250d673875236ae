"""The routing policy operators edit: typed, validated once, immutable.

See ``xds_server/default_policy.yaml`` for the commented format. Validation
errors name the file, line and problem (:mod:`xds_server.policy_loader`).
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wsfleet.channels.namespaces import ChannelsConfig
from wsfleet.registry import HashSources

NAME = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
PORT = Annotated[int, Field(ge=1, le=65535)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LbPolicy(StrEnum):
    MAGLEV = "maglev"
    RING_HASH = "ring_hash"
    ROUND_ROBIN = "round_robin"  # no stickiness: a pool where any member takes any request


class HashKey(Frozen):
    """Where Envoy finds the user id to hash on; any that are present are used."""

    header: str | None = "x-user-id"
    query_parameter: str | None = "user"
    cookie: str | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if not (self.header or self.query_parameter or self.cookie):
            raise ValueError("hash_key needs at least one of header, query_parameter, cookie")
        if self.header and not re.fullmatch(r"[a-z0-9-]+", self.header):
            raise ValueError(f"hash_key.header {self.header!r} must be a lower-case header name")
        return self

    def sources(self) -> HashSources:
        """What the gateways of the pool are told (through the registry) to check."""
        return HashSources(self.header, self.query_parameter, self.cookie)


SECONDS = Annotated[float, Field(gt=0, le=86_400 * 7)]
BYTES = Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)]


class RouteKind(StrEnum):
    """What a route carries; decides upgrades and timeouts."""

    WEBSOCKET = "websocket"  # HTTP/1.1 Upgrade to WebSocket, no request timeout
    SSE = "sse"  # a long streaming response (EventSource), no request timeout
    POLL = "poll"  # long polling: requests that wait for messages
    HTTP = "http"  # ordinary requests


class HealthCheck(Frozen):
    """Envoy's active TCP check of each gateway: a crashed one (still in EDS until its
    registration expires) stops getting new sessions within ``interval_s``. A *new*
    gateway gets sessions once its first check passes (within ``interval_s``)."""

    interval_s: SECONDS = 1.0
    timeout_s: SECONDS = 1.0
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 1
    healthy_threshold: Annotated[int, Field(ge=1)] = 1


class UpstreamKeepalive(Frozen):
    """How Envoy lets go of a gateway whose host vanished without a FIN (no stream idle
    timer on WebSocket routes): TCP keepalive on its connections to the pool (a connection
    silent for ``time_s`` is probed every ``interval_s``, reset after ``probes`` go
    unanswered), and the same bound on data it sent that stays unacknowledged
    (``TCP_USER_TIMEOUT``: while a client sends, keepalive does not probe, and the kernel
    would retransmit for ~15 minutes)."""

    time_s: Annotated[int, Field(ge=1, le=7200)] = 30
    interval_s: Annotated[int, Field(ge=1, le=600)] = 10
    probes: Annotated[int, Field(ge=1, le=20)] = 3

    @property
    def dead_after_s(self) -> int:
        """How long after a gateway's host vanished Envoy resets its connections."""
        return self.time_s + self.interval_s * self.probes


class OutlierDetection(Frozen):
    """Eject a gateway that keeps failing (Envoy outlier detection). Off by default: Envoy
    counts the end of an upgraded connection as a local-origin failure, so counting those
    would eject healthy gateways whose clients simply left.
    """

    consecutive_connect_failures: Annotated[int, Field(ge=1)] = 2
    consecutive_5xx: Annotated[int, Field(ge=1)] | None = None
    interval_s: SECONDS = 1.0
    base_ejection_time_s: SECONDS = 10.0
    max_ejection_percent: Annotated[int, Field(ge=1, le=100)] = 100


class Pool(Frozen):
    """A pool of gateway sidecars; members come from the registry."""

    name: NAME
    hash_key: HashKey = HashKey()
    lb_policy: LbPolicy = LbPolicy.MAGLEV
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Envoy's own default caps a cluster at 1024 upstream connections (and
    # pending requests, and requests); a pool must admit its whole connection count.
    max_connections: Annotated[int, Field(ge=1)] = 1_000_000
    max_pending_requests: Annotated[int, Field(ge=1)] = 1_000_000
    max_requests: Annotated[int, Field(ge=1)] = 1_000_000
    # concurrent retries (Envoy's default is 3): after a gateway dies, every session that
    # hashed to it is retried on another gateway at once; past this cap, clients get 503
    max_retries: Annotated[int, Field(ge=0)] = 1_000_000
    buffer_limit_bytes: BYTES = 32 * 1024  # per upstream connection
    health_check: HealthCheck | None = HealthCheck()  # null: off
    outlier_detection: OutlierDetection | None = None
    upstream_keepalive: UpstreamKeepalive = UpstreamKeepalive()
    # Warm standby: priority 0 is the first region listed, 1 the second, ...;
    # regions not listed come after. Empty: every region is priority 0.
    locality_priority: list[NAME] = []
    # Put the requesting Envoy's own region first (per node-group snapshots).
    prefer_local_region: bool = False


class UpgradeRateLimit(Frozen):
    """A token bucket on new requests (WebSocket upgrades) of one route, per Envoy."""

    per_second: Annotated[int, Field(ge=1)]
    burst: Annotated[int, Field(ge=1)] | None = None  # default: per_second


class Route(Frozen):
    """A path prefix sent to a pool."""

    name: NAME
    path_prefix: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")]
    pool: NAME
    kind: RouteKind = RouteKind.WEBSOCKET
    # default: none for WebSocket routes (heartbeats and upstream TCP keepalive find dead
    # ones), Envoy's 5 min for the others; 0 is not allowed
    stream_idle_timeout_s: SECONDS | None = None
    max_duration_s: SECONDS | None = None  # cap on a connection's life, e.g. to rebalance
    upgrade_rate_limit: UpgradeRateLimit | None = None


class Tls(Frozen):
    """TLS termination at Envoy with a certificate named in ``certificates``."""

    certificate: NAME


class Listener(Frozen):
    """An Envoy listener: address, port and the routes it serves, in order.

    Everything here is part of the Listener resource: changing it drains the
    listener's live connections (Envoy rebuilds the listener).
    """

    name: NAME
    address: str = "127.0.0.1"
    port: PORT
    routes: Annotated[list[NAME], Field(min_length=1)]
    tls: Tls | None = None
    # a downstream connection with no stream (never a live WebSocket: that is a stream)
    # is closed after this long: well above a long-poll client's gap between polls
    idle_timeout_s: SECONDS = 60.0
    # a request's headers must arrive within this long of its first byte (slowloris)
    request_headers_timeout_s: SECONDS = 10.0
    buffer_limit_bytes: BYTES = 32 * 1024  # per downstream connection
    # Envoy's x-request-id on every request: nothing in wsfleet reads it, and it costs
    # memory for the whole life of an upgraded stream (benchmarks/envoy_share.py)
    request_ids: bool = False

    @field_validator("address")
    @classmethod
    def _an_ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (Envoy binds IPs, not names)"
            ) from None
        return value


class Certificate(Frozen):
    """A certificate chain and key, read from files (relative to the policy file)."""

    name: NAME
    cert_file: str
    key_file: str


class Policy(Frozen):
    """A whole routing policy."""

    listeners: Annotated[list[Listener], Field(min_length=1)]
    routes: Annotated[list[Route], Field(min_length=1)]
    pools: Annotated[list[Pool], Field(min_length=1)]
    certificates: list[Certificate] = []
    # channel namespaces: the gateways and the server API follow them (docs/channels.md)
    channels: ChannelsConfig = ChannelsConfig()

    def pool(self, name: str) -> Pool:
        return next(pool for pool in self.pools if pool.name == name)

    def route(self, name: str) -> Route:
        return next(route for route in self.routes if route.name == name)

    def certificate(self, name: str) -> Certificate:
        return next(cert for cert in self.certificates if cert.name == name)

    def with_listener_port(self, port: int) -> Policy:
        """The same policy with its first listener moved to ``port`` (``wsfleet up --port``)."""
        first, *rest = self.listeners
        return self.model_copy(
            update={"listeners": [first.model_copy(update={"port": port}), *rest]}
        )


Loc = tuple[str | int, ...]


def reference_problems(policy: Policy) -> list[tuple[Loc, str]]:
    """Semantic checks the schema cannot express, each with the location it concerns."""
    problems: list[tuple[Loc, str]] = []
    for kind, names in (
        ("listeners", [item.name for item in policy.listeners]),
        ("routes", [item.name for item in policy.routes]),
        ("pools", [item.name for item in policy.pools]),
        ("certificates", [item.name for item in policy.certificates]),
    ):
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                problems.append(((kind, index, "name"), f"duplicate name {name!r}"))
            seen.add(name)
    bound: dict[int, str] = {}
    for index, listener in enumerate(policy.listeners):
        if listener.port in bound:
            problems.append(
                (
                    ("listeners", index, "port"),
                    f"port {listener.port} is already used by listener {bound[listener.port]!r}",
                )
            )
        bound.setdefault(listener.port, listener.name)
    pools = {pool.name for pool in policy.pools}
    routes = {route.name: route for route in policy.routes}
    certificates = {cert.name for cert in policy.certificates}
    for index, listener in enumerate(policy.listeners):
        if listener.tls is not None and listener.tls.certificate not in certificates:
            problems.append(
                (
                    ("listeners", index, "tls", "certificate"),
                    f"unknown certificate {listener.tls.certificate!r}",
                )
            )
    for index, route in enumerate(policy.routes):
        limit = route.upgrade_rate_limit
        if limit is not None and limit.burst is not None and limit.burst < limit.per_second:
            problems.append(
                (
                    ("routes", index, "upgrade_rate_limit", "burst"),
                    f"burst {limit.burst} is below per_second {limit.per_second}",
                )
            )
    for index, pool in enumerate(policy.pools):
        if len(set(pool.locality_priority)) != len(pool.locality_priority):
            problems.append((("pools", index, "locality_priority"), "a region is listed twice"))
    for index, route in enumerate(policy.routes):
        if route.pool not in pools:
            problems.append((("routes", index, "pool"), f"unknown pool {route.pool!r}"))
    for index, listener in enumerate(policy.listeners):
        prefixes: set[str] = set()
        for position, name in enumerate(listener.routes):
            loc: Loc = ("listeners", index, "routes", position)
            if name not in routes:
                problems.append((loc, f"unknown route {name!r}"))
                continue
            prefix = routes[name].path_prefix
            if prefix in prefixes:
                problems.append((loc, f"a second route for path prefix {prefix!r}"))
            prefixes.add(prefix)
    return problems
