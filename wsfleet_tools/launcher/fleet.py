"""The local fleet: Redis, backend, xDS server, Envoy and N sidecars on loopback.

:class:`LocalFleet` is used by ``wsfleet up`` and by the integration tests, so
the tests run exactly what a user runs. Every child process is started by the
:class:`~wsfleet_tools.launcher.children.Supervisor` and stopped by :meth:`LocalFleet.stop`.

It is a facade; each concern is a module of its own, sharing one
:class:`~wsfleet_tools.launcher.fleet_model.FleetContext`:

- :mod:`~wsfleet_tools.launcher.fleet_keys`: the state dir's keys, tokens, pod keys;
- :mod:`~wsfleet_tools.launcher.fleet_redis`: embedded Redis, Redis Cluster, or the given one;
- :mod:`~wsfleet_tools.launcher.control_planes`: the control-plane replicas;
- :mod:`~wsfleet_tools.launcher.envoy_tier`: the L7 Envoys, the L4 tier, client URLs;
- :mod:`~wsfleet_tools.launcher.workloads`: backends, sidecars and server API instances
  (Python children with ready files, :mod:`~wsfleet_tools.launcher.python_children`);
- :mod:`~wsfleet_tools.launcher.fleet_checks`: round trips, routability, health;
- :mod:`~wsfleet_tools.launcher.fleet_table`: the table ``wsfleet up`` prints.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
from pathlib import Path

from wsfleet.errors import StartupError
from wsfleet.readiness import write_ready
from wsfleet.registry.signing import PodSigner
from wsfleet.settings import DEFAULT_POOL
from wsfleet_tools.admin_client import fleet_file
from wsfleet_tools.launcher.children import Child, LineSink, Supervisor
from wsfleet_tools.launcher.control_planes import ControlPlanes
from wsfleet_tools.launcher.envoy_tier import EnvoyTier
from wsfleet_tools.launcher.fleet_checks import FleetChecks, wait_listening
from wsfleet_tools.launcher.fleet_keys import FleetKeys
from wsfleet_tools.launcher.fleet_model import (
    API_POOL,
    PROBE_USER,
    STARTUP_TIMEOUT_S,
    Edge,
    EnvoyInfo,
    FleetContext,
    FleetInfo,
    FleetOptions,
    SidecarInfo,
)
from wsfleet_tools.launcher.fleet_redis import FleetRedis
from wsfleet_tools.launcher.fleet_table import fleet_table
from wsfleet_tools.launcher.ports import ensure_port_free, free_port
from wsfleet_tools.launcher.redis_cluster import ClusterNode
from wsfleet_tools.launcher.restart_policy import RestartSettings
from wsfleet_tools.launcher.workloads import Workloads

__all__ = [
    "API_POOL",
    "PROBE_USER",
    "STARTUP_TIMEOUT_S",
    "Edge",
    "EnvoyInfo",
    "FleetInfo",
    "FleetOptions",
    "LocalFleet",
    "SidecarInfo",
]


class LocalFleet:
    """Start, inspect and stop the whole local topology."""

    def __init__(self, options: FleetOptions, sink: LineSink | None = None) -> None:
        state_dir = options.state_dir.resolve()
        supervisor = Supervisor(
            state_dir / "run" / "logs",
            sink,
            restart=RestartSettings() if options.restart_children else None,
            on_back=self._child_back,
        )
        self._ctx = FleetContext(options, state_dir, supervisor, FleetKeys(state_dir))
        self._redis = FleetRedis(self._ctx)
        self._control_planes = ControlPlanes(self._ctx)
        self._envoys = EnvoyTier(self._ctx)
        self._checks = FleetChecks(self._ctx, self._envoys)
        self._workloads = Workloads(self._ctx, self._envoys, self._checks)
        self.edges: dict[str, Edge] = {}
        self.routes_api = False  # the policy routes /api/ (to an `api` pool)

    # -- where things are ------------------------------------------------

    @property
    def options(self) -> FleetOptions:
        return self._ctx.options

    @property
    def state_dir(self) -> Path:
        return self._ctx.state_dir

    @property
    def run_dir(self) -> Path:
        return self._ctx.run_dir

    @property
    def supervisor(self) -> Supervisor:
        return self._ctx.supervisor

    @property
    def info(self) -> FleetInfo:
        return self._ctx.info

    @property
    def redis_nodes(self) -> list[ClusterNode]:
        """The embedded Redis Cluster's nodes (with ``redis_cluster``)."""
        return self._redis.nodes

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """Set when the first listener is TLS: trusts its certificate."""
        return self._ctx.client_tls

    @property
    def l4_admin_port(self) -> int:
        """The L4 tier's admin (0: no L4 tier, fewer than 2 Envoys)."""
        return self._ctx.l4_admin_port

    @property
    def client_url(self) -> str:
        return self._envoys.client_url

    @property
    def client_urls(self) -> dict[str, str]:
        """Every Envoy's client URL, by Envoy name (the first is :attr:`client_url`)."""
        return self._envoys.client_urls

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.info.xds_admin_port}"

    @property
    def api_url(self) -> str:
        """The server API, through the first Envoy (any instance takes any call)."""
        scheme = "https" if self.client_tls else "http"
        return f"{scheme}://127.0.0.1:{self.options.port}/api"

    def table(self) -> str:
        return fleet_table(self._ctx, self._envoys, self.api_url)

    # -- credentials -----------------------------------------------------

    @property
    def admin_token_path(self) -> Path:
        return self._ctx.keys.admin_token_path

    @property
    def registry_key_path(self) -> Path:
        return self._ctx.keys.registry_key_path

    @property
    def api_key_path(self) -> Path:
        return self._ctx.keys.api_key_path

    @property
    def api_keys_path(self) -> Path:
        return self._ctx.keys.api_keys_path

    @property
    def admin_token(self) -> str:
        return self._ctx.keys.admin_token

    @property
    def api_key(self) -> str:
        return self._ctx.keys.api_key

    def token(self, user_id: str, ttl_s: float = 3600) -> str:
        return self._ctx.keys.token(user_id, ttl_s)

    def pod_signer(self) -> PodSigner:
        """The fleet's root registry key (see :meth:`FleetKeys.pod_signer`)."""
        return self._ctx.keys.pod_signer()

    def pod_admin_token(self, pod_id: str) -> str:
        """The one admin token pod ``pod_id``'s admin API accepts (the operators' token
        works only on the control plane)."""
        return self._ctx.keys.pod_admin_token(pod_id)

    def pod_key_path(self, pod_id: str) -> Path:
        """Where pod ``pod_id``'s own key file is (written when it starts)."""
        return self._ctx.keys.pod_key_path(pod_id)

    # -- start -----------------------------------------------------------

    async def start(self) -> None:
        """Bring everything up; on any failure stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        options = self.options
        from xds_server.policy_loader import default_bundle, load_bundle

        # a bad file fails here, clearly
        bundle = load_bundle(options.policy_path) if options.policy_path else default_bundle()
        first = bundle.policy.listeners[0]
        if first.tls is not None:
            self._ctx.client_tls = _trusting(bundle.certificates[first.tls.certificate].chain_pem)
        # the server API runs where the policy routes /api/ (its `api` pool)
        self.routes_api = any(pool.name == API_POOL for pool in bundle.policy.pools)
        if options.sidecars < 1:
            raise StartupError("--sidecars must be at least 1")
        if options.xds_replicas < 1:
            raise StartupError("--xds-replicas must be at least 1")
        if options.envoys < 1:
            raise StartupError("--envoys must be at least 1")
        ensure_port_free("127.0.0.1", options.port, "client")
        ensure_port_free("127.0.0.1", options.admin_port, "admin")
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self._ctx.keys.ensure()

        await self._redis.start()
        # two chains side by side (each Python child spends about a second importing):
        # control plane -> Envoys, and backends -> gateways; a failure in one cancels the other
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._start_edge())
                gateways = group.create_task(self._start_gateways())
        except BaseExceptionGroup as failed:  # the first failure, as a serial start raised it
            raise failed.exceptions[0]  # noqa: B904
        started = gateways.result()
        # together: each waits for Envoy's health check to route to it (seconds, mostly idle)
        await asyncio.gather(
            *(self.wait_host_routable(info.pod_id, STARTUP_TIMEOUT_S) for info in started)
        )
        self.info.sidecars = {info.pod_id: info for info in started}  # in the order of their ids
        for _ in range(options.api_instances if self.routes_api else 0):
            await self.start_api()
        await self.wait_round_trip(STARTUP_TIMEOUT_S)
        # operators' commands find the fleet from its state dir (wsfleet pods --state-dir D)
        write_ready(
            fleet_file(self.state_dir),
            admin_url=self.admin_url,
            client_url=self.client_url,
            client_urls=self.client_urls,
            api_url=self.api_url,
            envoy_admin_url=f"http://127.0.0.1:{self.info.envoy_admin_port}",
            launcher_pid=os.getpid(),
        )

    async def _start_edge(self) -> None:
        await self._control_planes.start(grpc_port=0)
        await self._envoys.start()

    async def _start_gateways(self) -> list[SidecarInfo]:
        await self._workloads.start_backends()
        spawns = (self._workloads.spawn_sidecar() for _ in range(self.options.sidecars))
        return list(await asyncio.gather(*spawns))

    async def _child_back(self, child: Child) -> None:
        """A restarted child is up (restart_children): note an Envoy's new admin port (its
        bootstrap asks for any free one); return once clients can reach it again."""
        address = child.ready_file.read_text().strip() if child.ready_file else ""
        client_port = self._envoys.note_restart(child.name, address)
        if client_port is not None:
            await wait_listening(client_port, STARTUP_TIMEOUT_S)  # LDS came back
        elif child.name in self.info.sidecars:
            await self.wait_host_routable(child.name, STARTUP_TIMEOUT_S)

    # -- control planes and edges ----------------------------------------

    async def restart_xds(self, sig: int = signal.SIGKILL, down_s: float = 0.0) -> None:
        """Stop the xDS server (killed by default), wait ``down_s``, start it on the same port."""
        await self._control_planes.restart(sig, down_s)

    async def add_edge(self, region: str) -> Edge:
        """Another region's edge: its own control plane (same registry and policy) and its
        own Envoy, on a port of its own. Its Envoy says it is in ``region``, so a policy with
        ``prefer_local_region`` sends its clients to that region's gateways first."""
        port = free_port()
        name = f"edge-{region}"
        grpc_port, admin_port = await self._control_planes.spawn(
            f"xds-{region}", 0, free_port(), port
        )
        envoy_admin = await self._envoys.spawn(f"envoy-{region}", grpc_port, region, node_id=name)
        edge = Edge(region, f"ws://127.0.0.1:{port}/ws", envoy_admin, admin_port)
        self.edges[region] = edge
        return edge

    # -- Envoys ----------------------------------------------------------

    async def l4_health(self) -> dict[str, bool]:
        """The L4 tier's view: L7 Envoy name -> in its pool for new connections."""
        return await self._envoys.l4_health()

    async def stop_envoy(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stop one L7 Envoy (its clients' connections close with it); see
        :meth:`start_envoy_again` and, for a rolling restart of them all,
        :func:`wsfleet_tools.launcher.rollout.rollout_envoys`."""
        return await self._envoys.stop_envoy(name, sig)

    async def start_envoy_again(self, name: str) -> EnvoyInfo:
        """A stopped L7 Envoy's replacement: same node id, zone, client port and bootstrap
        (a new admin port); returns once its admin answers (not yet serving)."""
        return await self._envoys.start_envoy_again(name)

    # -- sidecars, server API, backends ----------------------------------

    async def start_sidecar(self, extra_args: tuple[str, ...] = ()) -> SidecarInfo:
        """Start one more sidecar; returns once it listens and is registered."""
        return await self._workloads.start_sidecar(extra_args)

    async def stop_sidecar(
        self, pod_id: str, sig: int = signal.SIGTERM, timeout_s: float = 10.0
    ) -> int:
        return await self._workloads.stop_sidecar(pod_id, sig, timeout_s)

    async def start_api(self, extra_args: tuple[str, ...] = ()) -> str:
        """Start one more server API instance; returns its name once Envoy routes to it."""
        return await self._workloads.start_api(extra_args)

    async def stop_api(self, name: str, sig: int = signal.SIGTERM) -> int:
        return await self._workloads.stop_api(name, sig)

    async def stop_backend(self, name: str, sig: int = signal.SIGTERM) -> int:
        return await self._workloads.stop_backend(name, sig)

    # -- Redis -----------------------------------------------------------

    async def stop_redis(self) -> None:
        """Stop the embedded Redis (a registry outage); :meth:`start_redis` brings it back."""
        await self._redis.stop_redis()

    async def start_redis(self) -> None:
        """Start the embedded Redis again on its port, empty (what a failover looks like)."""
        await self._redis.start_redis()

    async def kill_redis_master(self, name: str = "redis-1") -> None:
        """SIGKILL one master of the embedded Redis Cluster (its replica takes over)."""
        await self._redis.kill_redis_master(name)

    # -- checks ----------------------------------------------------------

    async def wait_host_routable(
        self, pod_id: str, timeout_s: float, pool: str = DEFAULT_POOL
    ) -> None:
        """Wait until every Envoy routes to ``pod_id`` in ``pool`` (health-checked)."""
        await self._checks.wait_host_routable(pod_id, timeout_s, pool)

    async def wait_hosts_healthy(self, pod_ids: set[str], timeout_s: float) -> None:
        """Wait until every Envoy lists exactly these pods, all HEALTHY, in the gateway
        cluster."""
        await self._checks.wait_hosts_healthy(pod_ids, timeout_s)

    async def wait_round_trip(self, timeout_s: float) -> None:
        """Wait until a WebSocket message makes it through every Envoy and back (the first
        Envoy alone with the SSE or long-poll probe)."""
        await self._checks.wait_round_trip(timeout_s)

    async def round_trip(
        self, user_id: str, text: str, transport: str = "websocket", url: str | None = None
    ) -> str:
        """One message there and back, through the first Envoy (or the one at ``url``)."""
        return await self._checks.round_trip(user_id, text, transport, url)

    # -- stop ------------------------------------------------------------

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop children in order: the L4 tier, sidecars, Envoy, xDS, backend, Redis; remove
        run files."""
        supervisor = self.supervisor
        supervisor.closing = True  # a child that exits from now on stays stopped
        await supervisor.stop(["l4"], timeout_s)  # no new connections first
        order = [info.pod_id for info in self.info.sidecars.values()]
        order += [c.name for c in supervisor.children if c.name.startswith("sidecar-")]
        order += [c.name for c in supervisor.children if c.name.startswith("api-")]
        await supervisor.stop(order, timeout_s)
        await supervisor.stop(["envoy", *(f"envoy-{r}" for r in self.edges)], timeout_s)
        await supervisor.stop(["xds", *(f"xds-{r}" for r in self.edges)], timeout_s)
        await supervisor.stop(list(self.info.backend_ports), timeout_s)
        await supervisor.stop(["redis"], timeout_s)
        await supervisor.stop_all(timeout_s)
        self.info.sidecars.clear()
        fleet_file(self.state_dir).unlink(missing_ok=True)
        redis_dir = self.run_dir / "redis"
        if redis_dir.exists():
            shutil.rmtree(redis_dir, ignore_errors=True)


def _trusting(chain_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate chain (any host name)."""
    context = ssl.create_default_context(cadata=chain_pem)
    context.check_hostname = False
    return context
