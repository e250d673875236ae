"""The local fleet: Redis, backend, xDS server, Envoy and N sidecars on loopback.

:class:`LocalFleet` is used by ``wsfleet up`` and by the integration tests, so
the tests run exactly what a user runs. Every child process is started by the
:class:`~wsfleet_tools.launcher.children.Supervisor` and stopped by :meth:`LocalFleet.stop`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from server_api.keys import ensure_local_key
from wsfleet import fleet_ca
from wsfleet.admin_auth import TOKEN_FILE, ensure_admin_token
from wsfleet.errors import StartupError
from wsfleet.readiness import read_ready, write_ready
from wsfleet.registry.signing import (
    KEY_FILE,
    PodSigner,
    ensure_registry_key,
    read_registry_key,
    write_pod_key,
)
from wsfleet.settings import DEFAULT_POOL, DEFAULT_STATE_DIR, redacted_url
from wsfleet.tokens import ensure_auth_key, mint_token, read_auth_key
from wsfleet_tools.admin_client import fleet_file
from wsfleet_tools.launcher.children import PORT_FLAGS, Child, LineSink, Supervisor
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis, wait_redis
from wsfleet_tools.launcher.envoy_bootstrap import (
    BootstrapParams,
    XdsTls,
    envoy_command,
    render_bootstrap,
    wait_admin_port,
)
from wsfleet_tools.launcher.l4 import L4Params, render_l4_bootstrap, upstream_health
from wsfleet_tools.launcher.ports import ensure_port_free, free_port, port_is_listening
from wsfleet_tools.launcher.redis_cluster import ClusterNode, cluster_url, start_redis_cluster
from wsfleet_tools.launcher.restart_policy import RestartSettings

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


class LocalFleet:
    """Start, inspect and stop the whole local topology."""

    def __init__(self, options: FleetOptions, sink: LineSink | None = None) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.run_dir = self.state_dir / "run"
        self.supervisor = Supervisor(
            self.run_dir / "logs",
            sink,
            restart=RestartSettings() if options.restart_children else None,
            on_back=self._child_back,
        )
        self.info = FleetInfo()
        self.redis_nodes: list[ClusterNode] = []  # with --redis-cluster
        self._next_sidecar = 1
        self._auth_key_path = self.state_dir / "auth.key"
        self.admin_token_path = self.state_dir / TOKEN_FILE
        self.registry_key_path = self.state_dir / KEY_FILE
        self.client_tls: ssl.SSLContext | None = None  # set when the first listener is TLS
        self.edges: dict[str, Edge] = {}
        self.api_key_path, self.api_keys_path = (
            self.state_dir / "api.key",
            self.state_dir / "api-keys.yaml",
        )
        self.routes_api = False
        self.l4_admin_port = 0  # the L4 tier's admin (0: no L4 tier, fewer than 2 Envoys)

    @property
    def client_url(self) -> str:
        scheme = "wss" if self.client_tls else "ws"
        return f"{scheme}://127.0.0.1:{self.options.port}/ws"

    @property
    def admin_token(self) -> str:
        return self.admin_token_path.read_text().strip()

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.info.xds_admin_port}"

    @property
    def api_url(self) -> str:
        """The server API, through the first Envoy (any instance takes any call)."""
        scheme = "https" if self.client_tls else "http"
        return f"{scheme}://127.0.0.1:{self.options.port}/api"

    @property
    def api_key(self) -> str:
        return self.api_key_path.read_text().strip()

    def token(self, user_id: str, ttl_s: float = 3600) -> str:
        return mint_token(read_auth_key(self._auth_key_path), user_id, ttl_s)

    def pod_signer(self) -> PodSigner:
        """The fleet's root registry key (the operators' and the control plane's): signs
        any pod's record, derives any pod's key and admin token. No pod is given it."""
        signer = read_registry_key(self.registry_key_path)
        assert signer is not None and signer.is_root
        return signer

    def pod_admin_token(self, pod_id: str) -> str:
        """The one admin token pod ``pod_id``'s admin API accepts (the operators' token
        works only on the control plane)."""
        return self.pod_signer().admin_token(pod_id)

    def pod_key_path(self, pod_id: str) -> Path:
        """Where pod ``pod_id``'s own key file is (written when it starts)."""
        return self.run_dir / "pod-keys" / f"{pod_id}.key"

    def _issue_pod_key(self, pod_id: str) -> Path:
        """Write pod ``pod_id``'s key (mode 0600, in a directory only we can list): the
        only registry credential the pod gets."""
        path = self.pod_key_path(pod_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return write_pod_key(self.pod_signer(), pod_id, path)

    def _child_env(self) -> dict[str, str]:
        """Settings passed in the environment, not on command lines (``ps`` shows those to
        every local user): the Redis URL carries its password."""
        return {"WSFLEET_REDIS_URL": self.info.redis_url}

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
            self.client_tls = _trusting(bundle.certificates[first.tls.certificate].chain_pem)
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
        self._auth_key_path = ensure_auth_key(self.state_dir)
        self.admin_token_path = ensure_admin_token(self.state_dir)
        self.registry_key_path = ensure_registry_key(self.state_dir)
        self.api_key_path, self.api_keys_path = ensure_local_key(self.state_dir)
        fleet_ca.ensure_server_pair(self.state_dir)  # xDS is served over mTLS only

        if options.redis_cluster and options.redis_url is not None:
            raise StartupError("give --redis-url or --redis-cluster, not both")
        if options.redis_replicas and not options.redis_cluster:
            raise StartupError("--redis-replicas needs --redis-cluster")
        if options.redis_cluster:
            self.redis_nodes = await start_redis_cluster(
                self.supervisor,
                options.redis_cluster,
                self.run_dir / "redis-cluster",
                options.redis_replicas,
            )
            self.info.redis_url = cluster_url(self.redis_nodes)
        elif options.redis_url is None:
            port = free_port()
            _, url = await start_embedded_redis(self.supervisor, port, self.run_dir / "redis")
            self.info.redis_url, self.info.redis_embedded = url, True
        else:
            await wait_redis(options.redis_url, 3.0)
            self.info.redis_url = options.redis_url

        if options.app not in ("demo", "chat"):
            raise StartupError(f"--app is demo or chat, not {options.app!r}")
        if options.app == "chat":
            ensure_port_free("127.0.0.1", options.chat_port, "chat page")
        for index in range(1, options.backends + 1):
            if options.app == "chat":
                name = f"chat-{index}"
                argv = [
                    *("--http-port", str(options.chat_port if index == 1 else 0)),
                    *("--client-url", self.client_url),
                    *("--auth-key-file", str(self._auth_key_path)),
                ]
                ready = await self._start_python(name, argv, module="examples.chat")
                self.info.chat_url = self.info.chat_url or f"http://127.0.0.1:{ready['http_port']}/"
            else:
                name = f"backend-{index}"
                broadcasters = [a for u in self.options.broadcasters for a in ("--broadcaster", u)]
                ready = await self._start_python(
                    name, ["backend", "--port", "0", "--name", name, *broadcasters]
                )
            self.info.backend_ports[name] = int(ready["port"])

        await self._start_xds(grpc_port=0)

        await self._start_envoy()
        for _ in range(options.sidecars):
            await self.start_sidecar()
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

    async def _start_xds(self, grpc_port: int) -> None:
        self.info.xds_grpc_port, self.info.xds_admin_port = await self._spawn_xds(
            "xds", grpc_port, self.options.admin_port, self.options.port
        )
        self.info.xds_replicas["xds"] = (self.info.xds_grpc_port, self.info.xds_admin_port)
        for index in range(2, self.options.xds_replicas + 1):
            name = f"xds-{index}"
            if name not in self.info.xds_replicas:
                ports = await self._spawn_xds(name, 0, free_port(), self.options.port)
                self.info.xds_replicas[name] = ports

    async def _spawn_xds(
        self, name: str, grpc_port: int, admin_port: int, listener_port: int
    ) -> tuple[int, int]:
        options = self.options
        argv = [
            "xds",
            *("--grpc-port", str(grpc_port)),
            *("--admin-port", str(admin_port)),
            *("--listener-port", str(listener_port)),
            *("--admin-token-file", str(self.admin_token_path)),
            *("--registry-key-file", str(self.registry_key_path)),
            *("--tls-dir", str(fleet_ca.tls_dir(self.state_dir))),
            *(["--policy", str(options.policy_path)] if options.policy_path else []),
            *options.xds_args,
        ]
        ready = await self._start_python(name, argv, env=self._child_env())
        return int(ready["grpc_port"]), int(ready["admin_port"])

    async def add_edge(self, region: str) -> Edge:
        """Another region's edge: its own control plane (same registry and policy) and its
        own Envoy, on a port of its own. Its Envoy says it is in ``region``, so a policy with
        ``prefer_local_region`` sends its clients to that region's gateways first."""
        port = free_port()
        name = f"edge-{region}"
        grpc_port, admin_port = await self._spawn_xds(f"xds-{region}", 0, free_port(), port)
        envoy_admin = await self._spawn_envoy(f"envoy-{region}", grpc_port, region, node_id=name)
        edge = Edge(region, f"ws://127.0.0.1:{port}/ws", envoy_admin, admin_port)
        self.edges[region] = edge
        return edge

    async def restart_xds(self, sig: int = signal.SIGKILL, down_s: float = 0.0) -> None:
        """Stop the xDS server (killed by default), wait ``down_s``, start it on the same port."""
        child = self.supervisor.find("xds")
        assert child is not None
        await child.stop(5.0, sig)
        (self.run_dir / "xds.ready.json").unlink(missing_ok=True)
        await asyncio.sleep(down_s)
        await self._start_xds(grpc_port=self.info.xds_grpc_port)

    async def _start_python(
        self,
        name: str,
        argv: list[str],
        module: str = "wsfleet_tools",
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``python -m module`` (the ``wsfleet`` command by default), until it is ready."""
        ready_file = self.run_dir / f"{name}.ready.json"
        child = await self.supervisor.start(
            name,
            [
                sys.executable,
                "-m",
                module,
                "--log-level",
                self.options.log_level,
                *argv,
                "--ready-file",
                str(ready_file),
            ],
            env,
        )
        facts = await self._wait_ready(child, ready_file)
        # a restart (restart_children) binds the same ports: Envoy, sidecars, the registry
        # and the ready facts we keep all expect it there
        chat = {"port": "--grpc-port", "http_port": "--http-port"}
        child.pin_ports(facts, chat if module == "examples.chat" else PORT_FLAGS)
        return facts

    async def _child_back(self, child: Child) -> None:
        """A restarted child is up (restart_children): note an Envoy's new admin port (its
        bootstrap asks for any free one); return once clients can reach it again."""
        address = child.ready_file.read_text().strip() if child.ready_file else ""
        envoy = self.info.envoys.get(child.name)
        if envoy is not None and ":" in address:
            admin_port = int(address.rsplit(":", 1)[1])
            self.info.envoys[child.name] = EnvoyInfo(
                envoy.node_id, envoy.zone, envoy.client_port, admin_port, envoy.stats_port
            )
            await _wait_listening(envoy.client_port, STARTUP_TIMEOUT_S)  # LDS came back
        elif child.name == "l4" and ":" in address:
            self.l4_admin_port = int(address.rsplit(":", 1)[1])
            await _wait_listening(self.options.port, STARTUP_TIMEOUT_S)
        elif child.name in self.info.sidecars:
            await self.wait_host_routable(child.name, STARTUP_TIMEOUT_S)

    async def _wait_ready(self, child: Child, ready_file: Path) -> dict[str, Any]:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            facts = read_ready(ready_file)
            if facts is not None:
                return facts
            if not child.running:
                await child.stop(1.0)
                raise StartupError(f"{child.name} exited at start:\n{child.tail(5)}")
            await asyncio.sleep(0.05)
        raise StartupError(f"{child.name} did not become ready in {STARTUP_TIMEOUT_S:.0f} s")

    async def _start_envoy(self) -> None:
        """The region's Envoys, one per zone, all fed by every control-plane replica. One
        Envoy takes the policy's port (``--port``). Several each ask the control plane, in
        their node metadata, for a port of their own (on one host they cannot share one),
        and the L4 tier takes ``--port`` in front of them (:mod:`~wsfleet_tools.launcher.l4`)."""
        tiered = self.options.envoys >= 2
        for index in range(1, self.options.envoys + 1):
            name = "envoy" if index == 1 else f"envoy-{index}"
            port = free_port() if tiered or index > 1 else self.options.port
            envoy = EnvoyInfo(f"envoy-{index}", f"zone-{index}", port, 0)
            self.info.envoys[name] = await self._start_l7_envoy(
                name, envoy, own_port=tiered or index > 1
            )
        if tiered:
            await self._start_l4()

    async def _start_l7_envoy(self, name: str, envoy: EnvoyInfo, own_port: bool) -> EnvoyInfo:
        """Start (or start again, same node id, zone and port) one of the region's Envoys."""
        more = tuple(grpc for key, (grpc, _) in self.info.xds_replicas.items() if key != "xds")
        stats_port = envoy.stats_port or free_port()  # a replacement keeps the scraped port
        admin_port = await self._spawn_envoy(
            name,
            self.info.xds_grpc_port,
            self.options.region,
            node_id=envoy.node_id,
            more_xds=more,
            zone=envoy.zone,
            listener_port=envoy.client_port if own_port else None,
            stats_port=stats_port,
        )
        return EnvoyInfo(envoy.node_id, envoy.zone, envoy.client_port, admin_port, stats_port)

    async def _start_l4(self) -> None:
        """The L4 tier on ``--port``, in front of every L7 Envoy (static config, no xDS)."""
        bootstrap = self.run_dir / "l4.yaml"
        bootstrap.write_text(
            render_l4_bootstrap(
                L4Params(
                    listen_port=self.options.port,
                    upstream_ports=tuple(e.client_port for e in self.info.envoys.values()),
                    upstream_tls=self.client_tls is not None,
                )
            )
        )
        address_file = self.run_dir / "l4.admin"
        address_file.unlink(missing_ok=True)
        child = await self.supervisor.start(
            "l4", envoy_command(bootstrap, address_file, self.options.envoy_concurrency)
        )
        self.l4_admin_port = await wait_admin_port(child, address_file, STARTUP_TIMEOUT_S)

    async def l4_health(self) -> dict[str, bool]:
        """The L4 tier's view: L7 Envoy name -> in its pool for new connections."""
        if not self.l4_admin_port:
            raise StartupError("this fleet has no L4 tier (it runs with 2 Envoys or more)")
        url = f"http://127.0.0.1:{self.l4_admin_port}/clusters?format=json"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            view = upstream_health(await response.json(content_type=None))
        return {
            name: view.get(envoy.client_port, False) for name, envoy in self.info.envoys.items()
        }

    async def stop_envoy(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stop one L7 Envoy (its clients' connections close with it); see
        :meth:`start_envoy_again` and, for a rolling restart of them all,
        :func:`wsfleet_tools.launcher.rollout.rollout_envoys`."""
        child = self.supervisor.find(name)
        assert child is not None and name in self.info.envoys, name
        return await child.stop(10.0, sig)

    async def start_envoy_again(self, name: str) -> EnvoyInfo:
        """A stopped L7 Envoy's replacement: same node id, zone, client port and bootstrap
        (a new admin port); returns once its admin answers (not yet serving)."""
        envoy = self.info.envoys[name]
        own_port = self.l4_admin_port != 0 or envoy.client_port != self.options.port
        self.info.envoys[name] = await self._start_l7_envoy(name, envoy, own_port)
        return self.info.envoys[name]

    @property
    def client_urls(self) -> dict[str, str]:
        """Every Envoy's client URL, by Envoy name (the first is :attr:`client_url`)."""
        scheme = "wss" if self.client_tls else "ws"
        return {
            name: f"{scheme}://127.0.0.1:{envoy.client_port}/ws"
            for name, envoy in self.info.envoys.items()
        }

    async def _spawn_envoy(
        self,
        name: str,
        xds_port: int,
        region: str,
        node_id: str = "envoy-1",
        more_xds: tuple[int, ...] = (),
        zone: str = "",
        listener_port: int | None = None,
        stats_port: int | None = None,
    ) -> int:
        bootstrap = self.run_dir / f"{name}.yaml"
        client = fleet_ca.ensure_node_pair(self.state_dir, node_id, region)
        tls = XdsTls(client.cert, client.key, fleet_ca.ca_file(self.state_dir))
        bootstrap.write_text(
            render_bootstrap(
                BootstrapParams(
                    node_id=node_id,
                    xds_port=xds_port,
                    api_type=self.options.api_type,
                    region=region,
                    xds_tls=tls,
                    more_xds=tuple(("127.0.0.1", port) for port in more_xds),
                    zone=zone,
                    listener_port=listener_port,
                    # the stats listener forwards to the admin: a port it can know
                    admin_port=0 if stats_port is None else free_port(),
                    stats_port=stats_port,
                )
            )
        )
        address_file = self.run_dir / f"{name}.admin"
        address_file.unlink(missing_ok=True)  # a replacement writes its own
        child = await self.supervisor.start(
            name, envoy_command(bootstrap, address_file, self.options.envoy_concurrency)
        )
        return await wait_admin_port(child, address_file, STARTUP_TIMEOUT_S)

    async def start_sidecar(self, extra_args: tuple[str, ...] = ()) -> SidecarInfo:
        """Start one more sidecar; returns once it listens and is registered."""
        index = self._next_sidecar
        self._next_sidecar += 1
        pod_id = f"sidecar-{index}"
        argv = [
            "sidecar",
            "--pod-id",
            pod_id,
            "--region",
            self.options.region,
            "--auth-key-file",
            str(self._auth_key_path),
            # its own pod key only: never the root key, never the operators' admin token
            "--registry-key-file",
            str(self._issue_pod_key(pod_id)),
            "--drain-budget",
            str(self.options.drain_budget_s),
            *(
                item
                for port in self.info.backend_ports.values()
                for item in ("--backend", f"127.0.0.1:{port}")
            ),
            *self.options.sidecar_args,
            *extra_args,
        ]
        facts = await self._start_python(pod_id, argv, env=self._child_env())
        if self.info.envoy_admin_port:  # Envoy sends it sessions once its health check passed
            await self.wait_host_routable(pod_id, STARTUP_TIMEOUT_S)
        child = self.supervisor.find(pod_id)
        assert child is not None
        info = SidecarInfo(pod_id, child, int(facts["port"]), int(facts["admin_port"]))
        self.info.sidecars[pod_id] = info
        return info

    async def start_api(self, extra_args: tuple[str, ...] = ()) -> str:
        """Start one more server API instance; returns its name once Envoy routes to it."""
        name = f"api-{len(self.info.apis) + 1}"
        while name in self.info.apis or self.supervisor.find(name) is not None:
            name = f"api-{int(name.rsplit('-', 1)[1]) + 1}"
        argv = [
            "api",
            *("--pod-id", name),
            *("--region", self.options.region),
            *("--api-keys", str(self.api_keys_path)),
            *("--registry-key-file", str(self._issue_pod_key(name))),  # its own key only
            *extra_args,
        ]
        facts = await self._start_python(name, argv, env=self._child_env())
        if self.info.envoy_admin_port:
            await self.wait_host_routable(name, STARTUP_TIMEOUT_S, pool=API_POOL)
        self.info.apis[name] = (int(facts["port"]), int(facts["admin_port"]))
        return name

    async def stop_api(self, name: str, sig: int = signal.SIGTERM) -> int:
        child = self.supervisor.find(name)
        assert child is not None, name
        self.info.apis.pop(name, None)
        return await child.stop(10.0, sig)

    async def stop_backend(self, name: str, sig: int = signal.SIGTERM) -> int:
        child = self.supervisor.find(name)
        assert child is not None, name
        return await child.stop(5.0, sig)

    async def stop_redis(self) -> None:
        """Stop the embedded Redis (a registry outage); :meth:`start_redis` brings it back."""
        child = self.supervisor.find("redis")
        assert child is not None and self.info.redis_embedded
        await child.stop(5.0, signal.SIGKILL)

    async def kill_redis_master(self, name: str = "redis-1") -> None:
        """SIGKILL one master of the embedded Redis Cluster (its replica takes over)."""
        [node] = [node for node in self.redis_nodes if node.name == name]
        assert node.master is None, f"{name} is a replica"
        await node.child.stop(5.0, signal.SIGKILL)

    async def start_redis(self) -> None:
        """Start the embedded Redis again on its port, empty (what a failover looks like)."""
        port = int(self.info.redis_url.rsplit(":", 1)[1].split("/")[0])
        await start_embedded_redis(self.supervisor, port, self.run_dir / "redis")

    async def stop_sidecar(
        self, pod_id: str, sig: int = signal.SIGTERM, timeout_s: float = 10.0
    ) -> int:
        info = self.info.sidecars.pop(pod_id)
        return await info.child.stop(timeout_s, sig)

    async def wait_host_routable(
        self, pod_id: str, timeout_s: float, pool: str = DEFAULT_POOL
    ) -> None:
        """Wait until every Envoy lists ``pod_id`` as healthy in ``pool`` *and* has
        health-checked every host of the pool since (Envoy keeps a new host out of rotation
        until its first check passes, while its admin page already says healthy)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            for envoy in self.info.envoys.values():
                await self._wait_routable_on(
                    session, envoy.admin_port, pod_id, deadline, timeout_s, pool
                )

    async def _wait_routable_on(
        self,
        session: aiohttp.ClientSession,
        admin_port: int,
        pod_id: str,
        deadline: float,
        timeout_s: float,
        pool_name: str,
    ) -> None:
        base = f"http://127.0.0.1:{admin_port}"
        checks_then: int | None = None
        hosts = 0
        while time.monotonic() < deadline:
            if checks_then is None:
                pool = await self._pool_hosts(session, admin_port, pool_name)
                if pool.get(pod_id) == "HEALTHY":
                    hosts, checks_then = len(pool), await self._checks(session, base, pool_name)
            else:
                checks = await self._checks(session, base, pool_name)
                if checks is None or checks >= checks_then + hosts:
                    return
            await asyncio.sleep(0.05)
        raise StartupError(f"Envoy did not route to {pod_id} within {timeout_s} s")

    async def _checks(
        self, session: aiohttp.ClientSession, base: str, pool: str = DEFAULT_POOL
    ) -> int | None:
        """Successful health checks of the pool so far (None: no health checking)."""
        stat = f"cluster.{pool}.health_check.success"
        async with session.get(f"{base}/stats?filter=^{stat}$") as response:
            text = await response.text()
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name == stat:
                return int(value)
        return None

    async def wait_hosts_healthy(self, pod_ids: set[str], timeout_s: float) -> None:
        """Wait until every Envoy lists exactly these pods, all HEALTHY, in the gateway
        cluster."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                views = [
                    await self._pool_hosts(session, envoy.admin_port)
                    for envoy in self.info.envoys.values()
                ]
                if all(
                    set(hosts) == pod_ids and set(hosts.values()) == {"HEALTHY"} for hosts in views
                ):
                    return
                await asyncio.sleep(0.1)
        raise StartupError(f"Envoy did not list {sorted(pod_ids)} as healthy in {timeout_s} s")

    async def _pool_hosts(
        self, session: aiohttp.ClientSession, admin_port: int, pool: str = DEFAULT_POOL
    ) -> dict[str, str]:
        """An Envoy's view of a pool: pod id -> HEALTHY, DRAINING, UNHEALTHY..."""
        url = f"http://127.0.0.1:{admin_port}/clusters?format=json"
        async with session.get(url) as response:
            status = await response.json(content_type=None)
        return {
            host.get("hostname", ""): _routable(host.get("health_status", {}))
            for cluster in status.get("cluster_statuses", [])
            if cluster.get("name") == pool
            for host in cluster.get("host_statuses", [])
        }

    # -- checks ----------------------------------------------------------

    async def wait_round_trip(self, timeout_s: float) -> None:
        """Wait until a WebSocket message makes it through every Envoy and back (the first
        Envoy alone with the SSE or long-poll probe)."""
        deadline = time.monotonic() + timeout_s
        last_error = "no attempt"
        urls = list(self.client_urls.values())[0 if self.l4_admin_port else 1 :]
        pending = urls if self.options.probe == "websocket" else []
        while time.monotonic() < deadline:
            try:
                await self.round_trip(PROBE_USER, "wsfleet-startup-probe", self.options.probe)
                while pending:
                    await self.round_trip(PROBE_USER, "wsfleet-startup-probe", url=pending[0])
                    pending.pop(0)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, AssertionError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        raise StartupError(
            f"no WebSocket round trip through Envoy in {timeout_s:.0f} s ({last_error})"
        )

    async def round_trip(
        self, user_id: str, text: str, transport: str = "websocket", url: str | None = None
    ) -> str:
        """One message there and back, through the first Envoy (or the one at ``url``)."""
        if transport != "websocket":
            return await self._sdk_round_trip(user_id, text, transport)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"{url or self.client_url}?user={user_id}",
                headers={"Authorization": f"Bearer {self.token(user_id)}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                ssl=self.client_tls if self.client_tls else True,
            ) as ws,
        ):
            await ws.send_str(text)
            message = await ws.receive(timeout=5.0)
            assert message.type is aiohttp.WSMsgType.TEXT, f"got {message.type.name}"
            assert message.data == text, f"echo {message.data!r} != {text!r}"
            return str(message.data)

    async def _sdk_round_trip(self, user_id: str, text: str, transport: str) -> str:
        from wsfleet_client.backoff import Backoff
        from wsfleet_client.client import Client

        client = Client(
            self.client_url,
            user_id,
            self.token(user_id),
            transports=(transport,),
            backoff=Backoff(base_s=0.05, cap_s=0.2, max_elapsed_s=2.0),
        )
        async with client:
            await asyncio.wait_for(client.connected.wait(), 5.0)
            await client.send(text)
            async for message in client:
                assert message.data == text, f"echo {message.data!r} != {text!r}"
                return text
        raise AssertionError("no echo")

    def table(self) -> str:
        here = (
            ""
            if self.state_dir == DEFAULT_STATE_DIR.resolve()
            else f" --state-dir {self.state_dir}"
        )
        rows = [
            (
                "clients (WebSocket)",
                f"{self.client_url}?user=<id>  (token: wsfleet token --user <id>{here})",
            ),
            (
                "server API",
                f"{self.api_url}/<method>  (key in {self.api_key_path}; "
                f"wsfleet publish CHANNEL DATA{here})"
                if self.info.apis
                else "none (the policy routes no /api/ to an `api` pool)",
            ),
            (
                "operate",
                f"wsfleet pods{here}  (drain, undrain, stop, disconnect, rollout, envoys)",
            ),
            (
                "control-plane admin",
                f"http://127.0.0.1:{self.info.xds_admin_port}/  (the fleet page; wsfleet "
                f"status{here})  /metrics  /debug/nodes",
            ),
            (
                "xDS (ADS gRPC)",
                ", ".join(f"127.0.0.1:{grpc}" for grpc, _ in self.info.xds_replicas.values())
                + f"  ({self.options.api_type})",
            ),
            *(
                (
                    f"{name} ({envoy.zone})",
                    f"clients {self.client_urls[name]}  admin "
                    f"http://127.0.0.1:{envoy.admin_port}/config_dump  /clusters",
                )
                for name, envoy in self.info.envoys.items()
            ),
            *(
                (
                    (
                        "l4 (tcp_proxy)",
                        f"clients {self.client_url}  -> {len(self.info.envoys)} Envoys  admin "
                        f"http://127.0.0.1:{self.l4_admin_port}/clusters",
                    ),
                )
                if self.l4_admin_port
                else ()
            ),
            *((("chat (browser)", self.info.chat_url),) if self.info.chat_url else ()),
            (
                "Redis",
                redacted_url(self.info.redis_url)
                + ("  (embedded)" if self.info.redis_embedded else ""),
            ),
            *(
                (f"{name} (gRPC)", f"127.0.0.1:{port}")
                for name, port in self.info.backend_ports.items()
            ),
        ]
        for name, (port, admin_port) in self.info.apis.items():
            rows.append(
                (
                    name,
                    f"http://127.0.0.1:{port}/api  admin http://127.0.0.1:{admin_port}/metrics",
                )
            )
        for info in self.info.sidecars.values():
            rows.append(
                (
                    info.pod_id,
                    f"ws://127.0.0.1:{info.port}/ws  "
                    f"admin http://127.0.0.1:{info.admin_port}/metrics  (pid {info.child.pid})",
                )
            )
        rows.append(("state dir", str(self.state_dir)))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name.ljust(width)}  {where}" for name, where in rows)

    # -- stop ------------------------------------------------------------

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop children in order: the L4 tier, sidecars, Envoy, xDS, backend, Redis; remove
        run files."""
        self.supervisor.closing = True  # a child that exits from now on stays stopped
        await self.supervisor.stop(["l4"], timeout_s)  # no new connections first
        order = [info.pod_id for info in self.info.sidecars.values()]
        order += [c.name for c in self.supervisor.children if c.name.startswith("sidecar-")]
        order += [c.name for c in self.supervisor.children if c.name.startswith("api-")]
        await self.supervisor.stop(order, timeout_s)
        await self.supervisor.stop(["envoy", *(f"envoy-{r}" for r in self.edges)], timeout_s)
        await self.supervisor.stop(["xds", *(f"xds-{r}" for r in self.edges)], timeout_s)
        await self.supervisor.stop(list(self.info.backend_ports), timeout_s)
        await self.supervisor.stop(["redis"], timeout_s)
        await self.supervisor.stop_all(timeout_s)
        self.info.sidecars.clear()
        fleet_file(self.state_dir).unlink(missing_ok=True)
        redis_dir = self.run_dir / "redis"
        if redis_dir.exists():
            shutil.rmtree(redis_dir, ignore_errors=True)


async def _wait_listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_listening("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise StartupError(f"nothing listens on port {port} after {timeout_s:g} s")
        await asyncio.sleep(0.05)


def _trusting(chain_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate chain (any host name)."""
    context = ssl.create_default_context(cadata=chain_pem)
    context.check_hostname = False
    return context


def _routable(health: dict[str, Any]) -> str:
    """HEALTHY when EDS says so and no active health check failed (or is pending)."""
    if health.get("failed_active_health_check") or health.get("pending_active_hc"):
        return "UNHEALTHY"
    return str(health.get("eds_health_status", "HEALTHY"))
