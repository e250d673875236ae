"""The region's Envoys: the L7 Envoys (one per zone, fed by every control-plane replica)
and, with two or more, the L4 tier in front of them; stopping one and starting it again;
the URLs clients use."""

from __future__ import annotations

import signal

import aiohttp

from wsfleet import fleet_ca
from wsfleet.errors import StartupError
from wsfleet_tools.launcher.envoy_bootstrap import (
    BootstrapParams,
    XdsTls,
    envoy_command,
    render_bootstrap,
    wait_admin_port,
)
from wsfleet_tools.launcher.fleet_model import STARTUP_TIMEOUT_S, EnvoyInfo, FleetContext
from wsfleet_tools.launcher.l4 import L4Params, render_l4_bootstrap, upstream_health
from wsfleet_tools.launcher.ports import free_port


class EnvoyTier:
    def __init__(self, ctx: FleetContext) -> None:
        self._ctx = ctx

    @property
    def client_url(self) -> str:
        """Where clients connect: ``--port`` (the first Envoy, or the L4 tier)."""
        scheme = "wss" if self._ctx.client_tls else "ws"
        return f"{scheme}://127.0.0.1:{self._ctx.options.port}/ws"

    @property
    def client_urls(self) -> dict[str, str]:
        """Every Envoy's client URL, by Envoy name (the first is :attr:`client_url`)."""
        scheme = "wss" if self._ctx.client_tls else "ws"
        return {
            name: f"{scheme}://127.0.0.1:{envoy.client_port}/ws"
            for name, envoy in self._ctx.info.envoys.items()
        }

    async def start(self) -> None:
        """The region's Envoys, one per zone, all fed by every control-plane replica. One
        Envoy takes the policy's port (``--port``). Several each ask the control plane, in
        their node metadata, for a port of their own (on one host they cannot share one),
        and the L4 tier takes ``--port`` in front of them (:mod:`~wsfleet_tools.launcher.l4`)."""
        options, info = self._ctx.options, self._ctx.info
        tiered = options.envoys >= 2
        for index in range(1, options.envoys + 1):
            name = "envoy" if index == 1 else f"envoy-{index}"
            port = free_port() if tiered or index > 1 else options.port
            envoy = EnvoyInfo(f"envoy-{index}", f"zone-{index}", port, 0)
            info.envoys[name] = await self._start_l7(name, envoy, own_port=tiered or index > 1)
        if tiered:
            await self._start_l4()

    async def _start_l7(self, name: str, envoy: EnvoyInfo, own_port: bool) -> EnvoyInfo:
        """Start (or start again, same node id, zone and port) one of the region's Envoys."""
        info = self._ctx.info
        more = tuple(grpc for key, (grpc, _) in info.xds_replicas.items() if key != "xds")
        stats_port = envoy.stats_port or free_port()  # a replacement keeps the scraped port
        admin_port = await self.spawn(
            name,
            info.xds_grpc_port,
            self._ctx.options.region,
            node_id=envoy.node_id,
            more_xds=more,
            zone=envoy.zone,
            listener_port=envoy.client_port if own_port else None,
            stats_port=stats_port,
        )
        return EnvoyInfo(envoy.node_id, envoy.zone, envoy.client_port, admin_port, stats_port)

    async def _start_l4(self) -> None:
        """The L4 tier on ``--port``, in front of every L7 Envoy (static config, no xDS)."""
        ctx = self._ctx
        bootstrap = ctx.run_dir / "l4.yaml"
        bootstrap.write_text(
            render_l4_bootstrap(
                L4Params(
                    listen_port=ctx.options.port,
                    upstream_ports=tuple(e.client_port for e in ctx.info.envoys.values()),
                    upstream_tls=ctx.client_tls is not None,
                )
            )
        )
        address_file = ctx.run_dir / "l4.admin"
        address_file.unlink(missing_ok=True)
        child = await ctx.supervisor.start(
            "l4", envoy_command(bootstrap, address_file, ctx.options.envoy_concurrency)
        )
        ctx.l4_admin_port = await wait_admin_port(child, address_file, STARTUP_TIMEOUT_S)

    async def l4_health(self) -> dict[str, bool]:
        """The L4 tier's view: L7 Envoy name -> in its pool for new connections."""
        if not self._ctx.l4_admin_port:
            raise StartupError("this fleet has no L4 tier (it runs with 2 Envoys or more)")
        url = f"http://127.0.0.1:{self._ctx.l4_admin_port}/clusters?format=json"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            view = upstream_health(await response.json(content_type=None))
        return {
            name: view.get(envoy.client_port, False)
            for name, envoy in self._ctx.info.envoys.items()
        }

    async def stop_envoy(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stop one L7 Envoy (its clients' connections close with it)."""
        child = self._ctx.supervisor.find(name)
        assert child is not None and name in self._ctx.info.envoys, name
        return await child.stop(10.0, sig)

    async def start_envoy_again(self, name: str) -> EnvoyInfo:
        """A stopped L7 Envoy's replacement: same node id, zone, client port and bootstrap
        (a new admin port); returns once its admin answers (not yet serving)."""
        ctx = self._ctx
        envoy = ctx.info.envoys[name]
        own_port = ctx.l4_admin_port != 0 or envoy.client_port != ctx.options.port
        ctx.info.envoys[name] = await self._start_l7(name, envoy, own_port)
        return ctx.info.envoys[name]

    def note_restart(self, name: str, address: str) -> int | None:
        """A restarted Envoy (``restart_children``) wrote its admin address (``host:port``, a
        new port): note it and return the client port to wait on (None: ``name`` is no
        Envoy of this tier, or it wrote no address)."""
        if ":" not in address:
            return None
        info = self._ctx.info
        envoy = info.envoys.get(name)
        if envoy is not None:
            admin_port = int(address.rsplit(":", 1)[1])
            info.envoys[name] = EnvoyInfo(
                envoy.node_id, envoy.zone, envoy.client_port, admin_port, envoy.stats_port
            )
            return envoy.client_port
        if name == "l4":
            self._ctx.l4_admin_port = int(address.rsplit(":", 1)[1])
            return self._ctx.options.port
        return None

    async def spawn(
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
        """One Envoy with a bootstrap for these control planes; its admin port once it
        answers."""
        ctx = self._ctx
        bootstrap = ctx.run_dir / f"{name}.yaml"
        client = fleet_ca.ensure_node_pair(ctx.state_dir, node_id, region)
        tls = XdsTls(client.cert, client.key, fleet_ca.ca_file(ctx.state_dir))
        bootstrap.write_text(
            render_bootstrap(
                BootstrapParams(
                    node_id=node_id,
                    xds_port=xds_port,
                    api_type=ctx.options.api_type,
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
        address_file = ctx.run_dir / f"{name}.admin"
        address_file.unlink(missing_ok=True)  # a replacement writes its own
        child = await ctx.supervisor.start(
            name, envoy_command(bootstrap, address_file, ctx.options.envoy_concurrency)
        )
        return await wait_admin_port(child, address_file, STARTUP_TIMEOUT_S)
