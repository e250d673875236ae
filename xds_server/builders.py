"""Policy + certificates + membership -> Envoy resources, as plain dicts.

Pure functions: no I/O, no protobuf (:mod:`xds_server.snapshot` serializes).
Names: listener ``L`` has the route configuration ``L``; pool ``P`` is the
cluster ``P`` and its ClusterLoadAssignment ``P``; certificate ``C`` is the
SDS secret ``C``.

Only an operator's change to a listener itself changes a Listener resource
(docs/envoy-behaviours.md, 5: any LDS change drains that listener's live connections).
Everything tunable at runtime lives elsewhere: routes, upgrade rate limits,
hash keys and stream timeouts in RDS; pool limits, outlier detection and
upstream buffers in CDS; members, their health and locality priorities in
EDS; certificates in SDS. The local rate-limit filter is always present in
the HTTP connection manager, bucket-less, and switched on per route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xds_server import type_urls
from xds_server.certificates import LoadedCertificate
from xds_server.membership import Endpoint, Membership
from xds_server.policy import HashKey, Listener, Policy, Pool, Route, RouteKind, UpstreamKeepalive
from xds_server.snapshot import DEFAULT_GROUP

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_HTTP_OPTIONS_NAME = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_HTTP_OPTIONS = "type.googleapis.com/" + UPSTREAM_HTTP_OPTIONS_NAME
LOCAL_RATELIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
STDOUT_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
REQ_WITHOUT_QUERY = (
    "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
)
ACCESS_LOG_FIELDS = {  # one JSON object per request on Envoy's stdout (docs/observability.md)
    "timestamp": "%START_TIME%",
    "component": "envoy",
    "node": "%HOSTNAME%",
    "listener": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "method": "%REQ(:METHOD)%",
    # never the query string: the token travels in ?token=
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "upgrade": "%REQ(UPGRADE)%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
}
ACCESS_LOG = {
    "name": "envoy.access_loggers.stdout",
    # not the L4 tier's and Kubernetes' health checks (two a second per Envoy)
    "filter": {
        "header_filter": {
            "header": {
                "name": ":path",
                "string_match": {"exact": "/edge/ready"},
                "invert_match": True,
            }
        }
    },
    "typed_config": {
        "@type": STDOUT_ACCESS_LOG,
        "log_format": {
            "json_format": ACCESS_LOG_FIELDS,
            "formatters": [
                {
                    "name": "envoy.formatter.req_without_query",
                    "typed_config": {"@type": REQ_WITHOUT_QUERY},
                }
            ],
        },
    },
}

Spec = dict[str, Any]
Resources = dict[str, dict[str, Spec]]


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """What a group of Envoys has in common that changes their config: their region, and
    the port their client listener takes when their bootstrap asks for one of its own
    (several Envoys on one host, ``wsfleet up --envoys N``; in a cluster every Envoy
    takes the policy's port and this stays None)."""

    region: str | None = None
    listener_port: int | None = None

    @property
    def key(self) -> str:
        """The group's name in the snapshot cache: ``*``, ``eu``, ``eu@9001``, ``*@9001``."""
        name = self.region or DEFAULT_GROUP
        return name if self.listener_port is None else f"{name}@{self.listener_port}"

    @classmethod
    def from_key(cls, key: str) -> NodeGroup:
        name, _, port = key.partition("@")
        return cls(None if name == DEFAULT_GROUP else name, int(port) if port else None)


ANY_REGION = NodeGroup()


def build_resources(
    policy: Policy,
    membership: Membership,
    certificates: Mapping[str, LoadedCertificate] | None = None,
    group: NodeGroup = ANY_REGION,
) -> Resources:
    """Every resource the Envoys of ``group`` need, by type URL and name."""
    if group.listener_port is not None:
        policy = policy.with_listener_port(group.listener_port)
    return {
        type_urls.LISTENER: {item.name: listener(item) for item in policy.listeners},
        type_urls.ROUTE: {
            item.name: route_configuration(item, policy) for item in policy.listeners
        },
        type_urls.CLUSTER: {pool.name: cluster(pool) for pool in policy.pools},
        type_urls.ENDPOINT: {
            pool.name: load_assignment(pool, membership.get(pool.name, ()), group)
            for pool in policy.pools
        },
        type_urls.SECRET: {name: secret(cert) for name, cert in (certificates or {}).items()},
    }


def _seconds(value: float) -> str:
    return f"{value:g}s"


def listener(item: Listener) -> Spec:
    hcm: Spec = {
        "@type": HCM,
        "stat_prefix": item.name,
        "codec_type": "AUTO",
        "rds": {"route_config_name": item.name, "config_source": ADS_SOURCE},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "common_http_protocol_options": {"idle_timeout": _seconds(item.idle_timeout_s)},
        "request_headers_timeout": _seconds(item.request_headers_timeout_s),
        "generate_request_id": item.request_ids,
        "access_log": [ACCESS_LOG],
        "http_filters": [
            {
                "name": RATE_LIMIT_FILTER,
                "typed_config": {"@type": LOCAL_RATELIMIT, "stat_prefix": "http_local_rate_limit"},
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    chain: Spec = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if item.tls is not None:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS_CONTEXT,
                "common_tls_context": {
                    "alpn_protocols": ["http/1.1"],
                    "tls_certificate_sds_secret_configs": [
                        {"name": item.tls.certificate, "sds_config": ADS_SOURCE}
                    ],
                },
            },
        }
    return {
        "name": item.name,
        "address": {"socket_address": {"address": item.address, "port_value": item.port}},
        "per_connection_buffer_limit_bytes": item.buffer_limit_bytes,
        "filter_chains": [chain],
    }


def route_configuration(item: Listener, policy: Policy) -> Spec:
    routes = [route_entry(policy.route(name), policy) for name in item.routes]
    return {
        "name": item.name,
        "virtual_hosts": [{"name": item.name, "domains": ["*"], "routes": routes}],
    }


def route_entry(route: Route, policy: Policy) -> Spec:
    pool = policy.pool(route.pool)
    action: Spec = {
        "cluster": pool.name,
        # upgraded, streaming and long-poll responses live as long as they like
        "timeout": "15s" if route.kind is RouteKind.HTTP else "0s",
        "hash_policy": hash_policy(pool.hash_key),
    }
    if route.kind is not RouteKind.WEBSOCKET:
        action["upgrade_configs"] = [{"upgrade_type": "websocket", "enabled": False}]
    if route.kind is not RouteKind.HTTP:
        # A gateway that just died is still in EDS until its registration expires: a new
        # session that cannot connect to it is retried on another gateway. Hash balancing
        # may pick the dead one again until its health check fails (<= the check interval,
        # 1 s by default), so the retries' backoff (on average ~1.7 s in all) outlasts that.
        # A gateway that refuses with 503 (it began draining a moment before Envoy heard,
        # or has no backend) is retried on another gateway too: that race costs the client
        # nothing. Refusals that depend on the client (401, 403, 429) are never retried.
        action["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,retriable-status-codes",
            "retriable_status_codes": [503],
            "num_retries": 6,
            "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"},
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": PREVIOUS_HOSTS},
                }
            ],
            # Maglev re-picks with a mutated hash, the same sequence on every retry: with 5
            # re-picks a 2-pod pool sent ~1 user in 64 back to the refusing pod every time
            # (≈ 17 % of runs of a 12-user test); 20 make that 1 in ~2 million
            "host_selection_retry_max_attempts": 20,
        }
    else:
        # An ordinary request (the server API): retried on another member only when it never
        # reached the first (connect failure, refused stream): a call is not repeated once
        # a server may have carried it out (a publication must not go out twice).
        action["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream",
            "num_retries": 3,
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": PREVIOUS_HOSTS},
                }
            ],
        }
    if route.stream_idle_timeout_s is not None:
        action["idle_timeout"] = _seconds(route.stream_idle_timeout_s)
    elif route.kind is RouteKind.WEBSOCKET:
        # No idle timer per upgraded stream (Envoy frees it: ≈ 0.4 KB per connection,
        # benchmarks/envoy_memory.py): the gateways ping every connection and close one
        # silent for 30 s, and a gateway that vanished is found by the TCP keepalive of
        # Envoy's upstream connections (the pool's upstream_keepalive)
        action["idle_timeout"] = "0s"
    if route.max_duration_s is not None:
        action["max_stream_duration"] = {"max_stream_duration": _seconds(route.max_duration_s)}
    entry: Spec = {"name": route.name, "match": {"prefix": route.path_prefix}, "route": action}
    if route.upgrade_rate_limit is not None:
        limit = route.upgrade_rate_limit
        always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        entry["typed_per_filter_config"] = {
            RATE_LIMIT_FILTER: {
                "@type": LOCAL_RATELIMIT,
                "stat_prefix": f"route_{route.name}",
                "token_bucket": {
                    "max_tokens": limit.burst or limit.per_second,
                    "tokens_per_fill": limit.per_second,
                    "fill_interval": "1s",
                },
                "filter_enabled": {**always, "runtime_key": f"wsfleet.{route.name}.rl_enabled"},
                "filter_enforced": {**always, "runtime_key": f"wsfleet.{route.name}.rl_enforced"},
            }
        }
    return entry


def hash_policy(key: HashKey) -> list[Spec]:
    """Hash on the first place the user id is found, in this order: header, query, cookie.

    Each policy is terminal: Envoy otherwise combines every one present into the hash, so
    a client with a valid ``x-user-id`` could pick its gateway by varying ``?user=``. The
    gateway checks the same value, in the same order, against the token's subject."""
    policies: list[Spec] = []
    if key.header:
        policies.append({"header": {"header_name": key.header}, "terminal": True})
    if key.query_parameter:
        policies.append({"query_parameter": {"name": key.query_parameter}, "terminal": True})
    if key.cookie:
        policies.append({"cookie": {"name": key.cookie}, "terminal": True})
    return policies


TCP_USER_TIMEOUT = 18  # <linux/tcp.h>: the bound on data left unacknowledged, in ms
IPPROTO_TCP = 6


def upstream_keepalive(keepalive: UpstreamKeepalive) -> Spec:
    """TCP keepalive on Envoy's connections to a pool's members (a live gateway pings each
    WebSocket every 15 s, so its connections are never silent for long)."""
    return {
        "keepalive_time": keepalive.time_s,
        "keepalive_interval": keepalive.interval_s,
        "keepalive_probes": keepalive.probes,
    }


def upstream_user_timeout(keepalive: UpstreamKeepalive) -> Spec:
    """``TCP_USER_TIMEOUT`` on the same connections, set before connect: data a client sent
    that the vanished host never acknowledges resets the connection as soon as keepalive
    would have (keepalive does not probe while data is in flight)."""
    return {
        "description": "TCP_USER_TIMEOUT: reset a connection whose peer vanished",
        "level": IPPROTO_TCP,
        "name": TCP_USER_TIMEOUT,
        "int_value": keepalive.dead_after_s * 1000,
        "state": "STATE_PREBIND",
    }


UPSTREAM_IDLE_TIMEOUT_S = 60.0
"""Envoy closes an idle pooled connection to a gateway after this long: below the
gateway's own HTTP idle deadline (the sidecar's ``http_idle_timeout_s``), so Envoy never
sends a request on a connection the gateway is closing."""


def cluster(pool: Pool) -> Spec:
    spec: Spec = {
        "name": pool.name,
        "typed_extension_protocol_options": {
            UPSTREAM_HTTP_OPTIONS_NAME: {
                "@type": UPSTREAM_HTTP_OPTIONS,
                "common_http_protocol_options": {"idle_timeout": _seconds(UPSTREAM_IDLE_TIMEOUT_S)},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS_SOURCE},
        "connect_timeout": _seconds(pool.connect_timeout_s),
        "lb_policy": pool.lb_policy.value.upper(),
        "per_connection_buffer_limit_bytes": pool.buffer_limit_bytes,
        "upstream_connection_options": {
            "tcp_keepalive": upstream_keepalive(pool.upstream_keepalive)
        },
        "upstream_bind_config": {
            "socket_options": [upstream_user_timeout(pool.upstream_keepalive)]
        },
        # Envoy's default panic mode (below 50 % healthy, balance over every host, dead ones
        # included) would send new sessions to crashed gateways: never panic.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        # Envoy keeps a host that left EDS for as long as its health check passes (and Maglev
        # keeps choosing it): a drained pod therefore stays in EDS as DRAINING until it stops.
        # That is also what keeps a fleet serving when the registry restarts empty: its pods
        # vanish from EDS for a refresh interval, but Envoy keeps routing to them.
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": pool.max_connections,
                    "max_pending_requests": pool.max_pending_requests,
                    "max_requests": pool.max_requests,
                    "max_retries": pool.max_retries,
                }
            ]
        },
    }
    if pool.health_check is not None:
        check = pool.health_check
        spec["health_checks"] = [
            {
                "timeout": _seconds(check.timeout_s),
                "interval": _seconds(check.interval_s),
                "unhealthy_threshold": check.unhealthy_threshold,
                "healthy_threshold": check.healthy_threshold,
                "tcp_health_check": {},
                "no_traffic_interval": _seconds(check.interval_s),
            }
        ]
    if pool.outlier_detection is not None:
        outlier = pool.outlier_detection
        spec["outlier_detection"] = {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": outlier.consecutive_connect_failures,
            "enforcing_consecutive_local_origin_failure": 100,
            "consecutive_5xx": outlier.consecutive_5xx or 5,
            "enforcing_consecutive_5xx": 100 if outlier.consecutive_5xx else 0,
            "enforcing_success_rate": 0,
            "interval": _seconds(outlier.interval_s),
            "base_ejection_time": _seconds(outlier.base_ejection_time_s),
            "max_ejection_percent": outlier.max_ejection_percent,
        }
    return spec


def locality_priority(pool: Pool, region: str, group: NodeGroup) -> int:
    """0 for the primary region, 1 for the first standby, ...; unlisted regions last."""
    order = list(pool.locality_priority)
    if pool.prefer_local_region and group.region:
        order = [group.region, *(item for item in order if item != group.region)]
    if not order:
        return 0
    return order.index(region) if region in order else len(order)


def load_assignment(pool: Pool, endpoints: tuple[Endpoint, ...], group: NodeGroup) -> Spec:
    """Endpoints grouped by locality, with priorities; draining pods stay, marked DRAINING."""
    localities: dict[tuple[str, str], list[Spec]] = {}
    for endpoint in endpoints:
        localities.setdefault((endpoint.region, endpoint.zone), []).append(
            {
                "endpoint": {
                    "address": {
                        "socket_address": {"address": endpoint.host, "port_value": endpoint.port}
                    },
                    "hostname": endpoint.pod_id,
                },
                "health_status": "DRAINING" if endpoint.draining else "HEALTHY",
            }
        )
    entries = []
    for (region, zone), lb_endpoints in sorted(localities.items()):
        entry: Spec = {"locality": {"region": region, "zone": zone}, "lb_endpoints": lb_endpoints}
        priority = locality_priority(pool, region, group)
        if priority:
            entry["priority"] = priority
        entries.append(entry)
    return {"cluster_name": pool.name, "endpoints": _contiguous_priorities(entries)}


def _contiguous_priorities(entries: list[Spec]) -> list[Spec]:
    """Envoy refuses gaps in priorities (0, 2 without 1): renumber densely."""
    used = sorted({entry.get("priority", 0) for entry in entries})
    dense = {priority: index for index, priority in enumerate(used)}
    for entry in entries:
        priority = dense[entry.get("priority", 0)]
        if priority:
            entry["priority"] = priority
        else:
            entry.pop("priority", None)
    return entries


def secret(cert: LoadedCertificate) -> Spec:
    return {
        "name": cert.name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": cert.chain_pem},
            "private_key": {"inline_string": cert.key_pem},
        },
    }
