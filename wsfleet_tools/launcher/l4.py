"""The L4 tier: one more Envoy, statically configured, in front of the region's L7 Envoys.

``wsfleet up --envoys N`` (N >= 2) puts it on the fleet's client port: a ``tcp_proxy``
listener that spreads new TCP connections over the L7 Envoys it finds healthy by an active
HTTP check of ``GET /edge/ready`` on each one's client port (200 while it serves, 503 once
the control plane drains it). It is what an anycast address and an L4 load balancer are in
production: it never terminates TLS nor reads a byte, so one Envoy drains out of it (no new
connections) while its existing connections stay up until the L7 Envoy's paced drain closes
them. The functions here render its bootstrap and read its view of the L7 Envoys; the
launcher (:mod:`wsfleet_tools.launcher.fleet`) starts it.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfleet.errors import StartupError
from wsfleet_tools.launcher.envoy_bootstrap import UPSTREAM_TLS

TEMPLATE = Path(__file__).resolve().parents[2] / "envoy" / "l4-bootstrap.yaml"
CLUSTER = "l7_envoys"  # the L4's cluster of L7 Envoys (its admin /clusters names it)
READY_PATH = "/edge/ready"  # what each L7 Envoy answers: 200 serving, 503 draining
HEALTH_CHECK_INTERVAL_S = 0.5  # a draining Envoy leaves the pool within about this
HEALTH_CHECK_TIMEOUT_S = 1.0
UNHEALTHY_THRESHOLD = 1  # one 503 (or refused connect) takes it out of the pool
HEALTHY_THRESHOLD = 2  # two 200s in a row bring it (back) in
MAX_CONNECTIONS = 100_000  # circuit breakers and the overload manager (Envoy's default: 1024)
# Flow control per connection (Envoy's default: 1 MiB): the L4 only forwards bytes, so a
# window the size of wsfleet's largest message is enough and caps its memory per connection.
BUFFER_LIMIT_BYTES = 64 * 1024
HC_MATCH = {"wsfleet_health_check": "tls"}  # selects the health check's TLS socket


@dataclass(frozen=True)
class L4Params:
    """What the L4 Envoy's bootstrap needs: where it listens and the L7 Envoys' ports."""

    listen_port: int
    upstream_ports: tuple[int, ...]
    node_id: str = "l4"
    listen_host: str = "127.0.0.1"
    upstream_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    admin_port: int = 0  # 0: any free port, written to --admin-address-path
    upstream_tls: bool = False  # the L7 Envoys' client listener is TLS (wss): check over TLS


def render_l4_bootstrap(params: L4Params, template: Path = TEMPLATE) -> str:
    """The L4 Envoy's bootstrap (YAML); raises StartupError for what cannot work."""
    if not params.upstream_ports:
        raise StartupError("the L4 tier needs at least one L7 Envoy behind it")
    try:
        text = template.read_text()
    except OSError as exc:
        raise StartupError(
            f"cannot read the L4 bootstrap template {template}: {exc.strerror}"
        ) from None
    endpoints = [
        {
            "endpoint": {
                "address": {"socket_address": {"address": params.upstream_host, "port_value": port}}
            }
        }
        for port in params.upstream_ports
    ]
    values = {
        "node_id": params.node_id,
        "admin_host": params.admin_host,
        "admin_port": str(params.admin_port),
        "listen_host": params.listen_host,
        "listen_port": str(params.listen_port),
        "buffer_limit_bytes": str(BUFFER_LIMIT_BYTES),
        "max_connections": str(MAX_CONNECTIONS),
        "hc_timeout": f"{HEALTH_CHECK_TIMEOUT_S}s",
        "hc_interval": f"{HEALTH_CHECK_INTERVAL_S}s",
        "unhealthy_threshold": str(UNHEALTHY_THRESHOLD),
        "healthy_threshold": str(HEALTHY_THRESHOLD),
        "hc_path": READY_PATH,
        "endpoints": json.dumps(endpoints),  # JSON is YAML: one line, whatever the indentation
        "hc_transport_match": "",
        "transport_socket_matches": "",
    }
    if params.upstream_tls:
        # the proxied bytes pass through untouched (the cluster's default socket is plain
        # TCP); only the health check speaks TLS to the L7 listener. It reads a status code
        # on loopback, so it does not verify the certificate.
        values["hc_transport_match"] = "transport_socket_match_criteria: " + json.dumps(HC_MATCH)
        values["transport_socket_matches"] = "transport_socket_matches: " + json.dumps(
            [
                {
                    "name": "health_check_tls",
                    "match": HC_MATCH,
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": UPSTREAM_TLS,
                            "common_tls_context": {"alpn_protocols": ["http/1.1"]},
                        },
                    },
                }
            ]
        )
    return string.Template(text).substitute(values)


def upstream_health(clusters: dict[str, Any]) -> dict[int, bool]:
    """The L4's view of each L7 Envoy (its admin ``/clusters?format=json``): client port ->
    in the pool for new connections (its last health check passed)."""
    view: dict[int, bool] = {}
    for cluster in clusters.get("cluster_statuses", []):
        if cluster.get("name") != CLUSTER:
            continue
        for host in cluster.get("host_statuses", []):
            port = int(host.get("address", {}).get("socket_address", {}).get("port_value", 0))
            health = host.get("health_status", {})
            failed = any(
                health.get(flag)
                for flag in (
                    "failed_active_health_check",
                    "pending_active_hc",
                    "failed_outlier_check",
                )
            )
            view[port] = not failed and health.get("eds_health_status", "HEALTHY") == "HEALTHY"
    return view
