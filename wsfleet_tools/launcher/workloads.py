"""The fleet's Python workloads behind Envoy: the backends (the demo or the chat example),
the gateway sidecars and the server API instances. Each starts with its own pod key only
(never the root key, never the operators' admin token) and counts as started once every
Envoy routes to it."""

from __future__ import annotations

import signal

from wsfleet.errors import StartupError
from wsfleet_tools.launcher.envoy_tier import EnvoyTier
from wsfleet_tools.launcher.fleet_checks import FleetChecks
from wsfleet_tools.launcher.fleet_model import (
    API_POOL,
    STARTUP_TIMEOUT_S,
    FleetContext,
    SidecarInfo,
)
from wsfleet_tools.launcher.ports import ensure_port_free
from wsfleet_tools.launcher.python_children import start_python


class Workloads:
    def __init__(self, ctx: FleetContext, envoys: EnvoyTier, checks: FleetChecks) -> None:
        self._ctx = ctx
        self._envoys = envoys
        self._checks = checks
        self._next_sidecar = 1

    async def start_backends(self) -> None:
        """The options' backends: the demo's echo backends or the chat example (whose first
        instance serves its page on ``chat_port``)."""
        ctx, options = self._ctx, self._ctx.options
        if options.app not in ("demo", "chat"):
            raise StartupError(f"--app is demo or chat, not {options.app!r}")
        if options.app == "chat":
            ensure_port_free("127.0.0.1", options.chat_port, "chat page")
        for index in range(1, options.backends + 1):
            if options.app == "chat":
                name = f"chat-{index}"
                argv = [
                    *("--http-port", str(options.chat_port if index == 1 else 0)),
                    *("--client-url", self._envoys.client_url),
                    *("--auth-key-file", str(ctx.keys.auth_key_path)),
                ]
                ready = await start_python(ctx, name, argv, module="examples.chat")
                ctx.info.chat_url = ctx.info.chat_url or f"http://127.0.0.1:{ready['http_port']}/"
            else:
                name = f"backend-{index}"
                broadcasters = [a for u in options.broadcasters for a in ("--broadcaster", u)]
                ready = await start_python(
                    ctx, name, ["backend", "--port", "0", "--name", name, *broadcasters]
                )
            ctx.info.backend_ports[name] = int(ready["port"])

    async def start_sidecar(self, extra_args: tuple[str, ...] = ()) -> SidecarInfo:
        """Start one more sidecar; returns once it listens, is registered and every Envoy
        routes to it (Envoy sends it sessions once its health check passed)."""
        info = await self.spawn_sidecar(extra_args)
        if self._ctx.info.envoy_admin_port:
            await self._checks.wait_host_routable(info.pod_id, STARTUP_TIMEOUT_S)
        return info

    async def spawn_sidecar(self, extra_args: tuple[str, ...] = ()) -> SidecarInfo:
        """Start one more sidecar; returns once it listens and is registered (Envoy may not
        route to it yet: the fleet's start waits for that once its Envoys are up)."""
        ctx, options = self._ctx, self._ctx.options
        index = self._next_sidecar
        self._next_sidecar += 1
        pod_id = f"sidecar-{index}"
        argv = [
            "sidecar",
            "--pod-id",
            pod_id,
            "--region",
            options.region,
            "--auth-key-file",
            str(ctx.keys.auth_key_path),
            # its own pod key only: never the root key, never the operators' admin token
            "--registry-key-file",
            str(ctx.keys.issue_pod_key(pod_id)),
            "--drain-budget",
            str(options.drain_budget_s),
            *(
                item
                for port in ctx.info.backend_ports.values()
                for item in ("--backend", f"127.0.0.1:{port}")
            ),
            *options.sidecar_args,
            *extra_args,
        ]
        facts = await start_python(ctx, pod_id, argv, env=ctx.child_env())
        child = ctx.supervisor.find(pod_id)
        assert child is not None
        info = SidecarInfo(pod_id, child, int(facts["port"]), int(facts["admin_port"]))
        ctx.info.sidecars[pod_id] = info
        return info

    async def stop_sidecar(
        self, pod_id: str, sig: int = signal.SIGTERM, timeout_s: float = 10.0
    ) -> int:
        info = self._ctx.info.sidecars.pop(pod_id)
        return await info.child.stop(timeout_s, sig)

    async def start_api(self, extra_args: tuple[str, ...] = ()) -> str:
        """Start one more server API instance; returns its name once Envoy routes to it."""
        ctx = self._ctx
        name = f"api-{len(ctx.info.apis) + 1}"
        while name in ctx.info.apis or ctx.supervisor.find(name) is not None:
            name = f"api-{int(name.rsplit('-', 1)[1]) + 1}"
        argv = [
            "api",
            *("--pod-id", name),
            *("--region", ctx.options.region),
            *("--api-keys", str(ctx.keys.api_keys_path)),
            *("--registry-key-file", str(ctx.keys.issue_pod_key(name))),  # its own key only
            *extra_args,
        ]
        facts = await start_python(ctx, name, argv, env=ctx.child_env())
        if ctx.info.envoy_admin_port:
            await self._checks.wait_host_routable(name, STARTUP_TIMEOUT_S, pool=API_POOL)
        ctx.info.apis[name] = (int(facts["port"]), int(facts["admin_port"]))
        return name

    async def stop_api(self, name: str, sig: int = signal.SIGTERM) -> int:
        child = self._ctx.supervisor.find(name)
        assert child is not None, name
        self._ctx.info.apis.pop(name, None)
        return await child.stop(10.0, sig)

    async def stop_backend(self, name: str, sig: int = signal.SIGTERM) -> int:
        child = self._ctx.supervisor.find(name)
        assert child is not None, name
        return await child.stop(5.0, sig)
