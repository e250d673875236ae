"""Policy + membership -> Envoy resources, as plain dicts in Envoy's config shape.

Pure functions: no I/O, no protobuf. :mod:`xds_server.snapshot` serializes.
Names: a listener ``L`` has the route configuration ``L``; a pool ``P`` is the
cluster ``P`` and its ClusterLoadAssignment ``P``.

Only an operator's change to a listener itself changes a Listener resource:
every filter that may be tuned at runtime is always present in the HTTP
connection manager, and tuned per route (RDS), because any LDS change drains
the live connections of that listener (FACTS gotcha 5).
"""

from __future__ import annotations

from typing import Any

from xds_server import type_urls
from xds_server.membership import Endpoint, Membership
from xds_server.policy import HashKey, Listener, Policy, Pool, Route

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
LOCAL_RATELIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}

Spec = dict[str, Any]
Resources = dict[str, dict[str, Spec]]


def build_resources(policy: Policy, membership: Membership) -> Resources:
    """Every resource one Envoy needs, by type URL and name."""
    return {
        type_urls.LISTENER: {item.name: listener(item) for item in policy.listeners},
        type_urls.ROUTE: {
            item.name: route_configuration(item, policy) for item in policy.listeners
        },
        type_urls.CLUSTER: {pool.name: cluster(pool) for pool in policy.pools},
        type_urls.ENDPOINT: {
            pool.name: load_assignment(pool.name, membership.get(pool.name, ()))
            for pool in policy.pools
        },
        type_urls.SECRET: {},
    }


def listener(item: Listener) -> Spec:
    hcm: Spec = {
        "@type": HCM,
        "stat_prefix": item.name,
        "codec_type": "AUTO",
        "rds": {"route_config_name": item.name, "config_source": ADS_SOURCE},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "http_filters": [
            {
                # Present but bucket-less: routes switch limits on through RDS.
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {"@type": LOCAL_RATELIMIT, "stat_prefix": "http_local_rate_limit"},
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    return {
        "name": item.name,
        "address": {"socket_address": {"address": item.address, "port_value": item.port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
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
        "timeout": "0s",  # upgraded and streaming responses live as long as they like
        "hash_policy": hash_policy(pool.hash_key),
    }
    if not route.websocket:
        action["upgrade_configs"] = [{"upgrade_type": "websocket", "enabled": False}]
    return {"name": route.name, "match": {"prefix": route.path_prefix}, "route": action}


def hash_policy(key: HashKey) -> list[Spec]:
    """Hash on every place the user id may be; absent ones are skipped by Envoy."""
    policies: list[Spec] = []
    if key.header:
        policies.append({"header": {"header_name": key.header}})
    if key.query_parameter:
        policies.append({"query_parameter": {"name": key.query_parameter}})
    if key.cookie:
        policies.append({"cookie": {"name": key.cookie}})
    return policies


def cluster(pool: Pool) -> Spec:
    limit = pool.max_connections
    return {
        "name": pool.name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS_SOURCE},
        "connect_timeout": f"{pool.connect_timeout_s}s",
        "lb_policy": pool.lb_policy.value.upper(),
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": limit,
                    "max_pending_requests": limit,
                    "max_requests": limit,
                    "max_retries": 3,
                }
            ]
        },
    }


def load_assignment(pool_name: str, endpoints: tuple[Endpoint, ...]) -> Spec:
    """Endpoints grouped by locality; draining pods stay, marked DRAINING."""
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
    return {
        "cluster_name": pool_name,
        "endpoints": [
            {"locality": {"region": region, "zone": zone}, "lb_endpoints": lb_endpoints}
            for (region, zone), lb_endpoints in sorted(localities.items())
        ],
    }
