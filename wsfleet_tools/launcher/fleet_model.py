"""What the local fleet is made of: its options, where each part runs (:class:`FleetInfo`),
and the :class:`FleetContext` every part of the launcher shares (the facade,
:class:`~wsfleet_tools.launcher.fleet.LocalFleet`, builds it once)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from wsfleet_tools.launcher.children import Child, Supervisor
from wsfleet_tools.launcher.fleet_keys import FleetKeys

PROBE_USER = "wsfleet-probe"
API_POOL = "api"  # the pool the default policy routes /api/ to
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FleetOptions:
    """What ``wsfleet up`` takes; defaults are the local fleet's."""

    sidecars: int = 2
    backends: int = 1
    port: int = 8080
    admin_port: int = 8081
    policy_path: Path | None = None
    redis_url: str | None = None
    redis_cluster: int = 0  # masters of an embedded Redis Cluster (0: one embedded Redis)
    redis_replicas: int = 0  # replicas of each of those masters
    state_dir: Path = Path(".wsfleet")
    api_type: str = "GRPC"
    envoy_concurrency: int = 1
    sidecar_args: tuple[str, ...] = ()
    xds_args: tuple[str, ...] = ()
    log_level: str = "info"
    drain_budget_s: float = 3.0  # a sidecar's SIGTERM drain (Ctrl-C of the local fleet)
    probe: str = "websocket"  # the startup round trip: websocket, sse or poll
    region: str = "local"  # the region of the Envoy (node locality) and of the sidecars
    xds_replicas: int = 1  # control planes serving the same snapshots; Envoy lists them all
    envoys: int = 1  # Envoys, one per zone, each on a client port of its own
    api_instances: int = 2  # server API instances behind Envoy's /api/ (any takes any call)
    app: str = "demo"  # the backend: the demo (echo and commands) or the chat example
    chat_port: int = 8082  # the chat example's page (with app="chat")
    broadcasters: tuple[str, ...] = ()  # users the demo backend lets /broadcast ("*": any)
    restart_children: bool = False  # restart a child that dies unasked (`wsfleet up` does)


@dataclass
class SidecarInfo:
    pod_id: str
    child: Child
    port: int
    admin_port: int


@dataclass(frozen=True)
class EnvoyInfo:
    """One of the region's Envoys (``wsfleet up --envoys N``): its node, zone and ports."""

    node_id: str
    zone: str
    client_port: int
    admin_port: int
    stats_port: int = 0  # GET /stats/prometheus only, for Prometheus (its admin stays apart)


@dataclass(frozen=True)
class Edge:
    """An extra region's entry point (``LocalFleet.add_edge``)."""

    region: str
    client_url: str
    envoy_admin_port: int
    xds_admin_port: int


@dataclass
class FleetInfo:
    """Where everything runs, once started."""

    redis_url: str = ""
    redis_embedded: bool = False
    backend_ports: dict[str, int] = field(default_factory=dict)  # name -> gRPC port
    xds_grpc_port: int = 0  # the first control plane's (the one `wsfleet pods` asks)
    xds_admin_port: int = 0
    xds_replicas: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> ports
    envoys: dict[str, EnvoyInfo] = field(default_factory=dict)  # every Envoy, by name
    sidecars: dict[str, SidecarInfo] = field(default_factory=dict)
    apis: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (port, admin)
    chat_url: str = ""  # the chat example's page (app="chat")

    @property
    def envoy_admin_port(self) -> int:
        """The first Envoy's admin port (0 until it runs)."""
        first = self.envoys.get("envoy")
        return first.admin_port if first else 0


@dataclass
class FleetContext:
    """What every part of the launcher reads (and the parts that start things fill in):
    the options, the state dir and its keys, the supervisor of every child, where each runs."""

    options: FleetOptions
    state_dir: Path
    supervisor: Supervisor
    keys: FleetKeys
    info: FleetInfo = field(default_factory=FleetInfo)
    client_tls: ssl.SSLContext | None = None  # set when the first listener is TLS
    l4_admin_port: int = 0  # the L4 tier's admin (0: no L4 tier, fewer than 2 Envoys)

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def child_env(self) -> dict[str, str]:
        """Settings passed in the environment, not on command lines (``ps`` shows those to
        every local user): the Redis URL carries its password."""
        return {"WSFLEET_REDIS_URL": self.info.redis_url}
