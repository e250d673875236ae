"""The fleet's control-plane replicas (``xds``, ``xds-2``, ...): all serve the same
snapshots from the same registry; every Envoy lists them all."""

from __future__ import annotations

import asyncio
import signal

from wsfleet import fleet_ca
from wsfleet_tools.launcher.fleet_model import FleetContext
from wsfleet_tools.launcher.ports import free_port
from wsfleet_tools.launcher.python_children import start_python


class ControlPlanes:
    def __init__(self, ctx: FleetContext) -> None:
        self._ctx = ctx

    async def start(self, grpc_port: int) -> None:
        """The first replica on the options' admin port (and ``grpc_port``; 0: any), then
        the others not yet running, on free ports."""
        options, info = self._ctx.options, self._ctx.info
        info.xds_grpc_port, info.xds_admin_port = await self.spawn(
            "xds", grpc_port, options.admin_port, options.port
        )
        info.xds_replicas["xds"] = (info.xds_grpc_port, info.xds_admin_port)
        for index in range(2, options.xds_replicas + 1):
            name = f"xds-{index}"
            if name not in info.xds_replicas:
                ports = await self.spawn(name, 0, free_port(), options.port)
                info.xds_replicas[name] = ports

    async def spawn(
        self, name: str, grpc_port: int, admin_port: int, listener_port: int
    ) -> tuple[int, int]:
        """One control plane; returns its (gRPC, admin) ports once it is ready."""
        ctx, options = self._ctx, self._ctx.options
        argv = [
            "xds",
            *("--grpc-port", str(grpc_port)),
            *("--admin-port", str(admin_port)),
            *("--listener-port", str(listener_port)),
            *("--admin-token-file", str(ctx.keys.admin_token_path)),
            *("--registry-key-file", str(ctx.keys.registry_key_path)),
            *("--tls-dir", str(fleet_ca.tls_dir(ctx.state_dir))),
            *(["--policy", str(options.policy_path)] if options.policy_path else []),
            *options.xds_args,
        ]
        ready = await start_python(ctx, name, argv, env=ctx.child_env())
        return int(ready["grpc_port"]), int(ready["admin_port"])

    async def restart(self, sig: int = signal.SIGKILL, down_s: float = 0.0) -> None:
        """Stop the xDS server (killed by default), wait ``down_s``, start it on the same port."""
        child = self._ctx.supervisor.find("xds")
        assert child is not None
        await child.stop(5.0, sig)
        (self._ctx.run_dir / "xds.ready.json").unlink(missing_ok=True)
        await asyncio.sleep(down_s)
        await self.start(grpc_port=self._ctx.info.xds_grpc_port)
