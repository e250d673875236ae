"""What the launcher waits on before it says a part is up: a message's round trip through
every Envoy, a new host routable (health-checked) on every Envoy, a port that listens."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from wsfleet.errors import StartupError
from wsfleet.settings import DEFAULT_POOL
from wsfleet_tools.launcher.envoy_tier import EnvoyTier
from wsfleet_tools.launcher.fleet_model import PROBE_USER, FleetContext
from wsfleet_tools.launcher.ports import port_is_listening


class FleetChecks:
    def __init__(self, ctx: FleetContext, envoys: EnvoyTier) -> None:
        self._ctx = ctx
        self._envoys = envoys

    # -- routability -----------------------------------------------------

    async def wait_host_routable(
        self, pod_id: str, timeout_s: float, pool: str = DEFAULT_POOL
    ) -> None:
        """Wait until every Envoy lists ``pod_id`` as healthy in ``pool`` *and* has
        health-checked every host of the pool since (Envoy keeps a new host out of rotation
        until its first check passes, while its admin page already says healthy)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            for envoy in self._ctx.info.envoys.values():
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
                pool = await _pool_hosts(session, admin_port, pool_name)
                if pool.get(pod_id) == "HEALTHY":
                    hosts, checks_then = len(pool), await _checks(session, base, pool_name)
            else:
                checks = await _checks(session, base, pool_name)
                if checks is None or checks >= checks_then + hosts:
                    return
            await asyncio.sleep(0.05)
        raise StartupError(f"Envoy did not route to {pod_id} within {timeout_s} s")

    async def wait_hosts_healthy(self, pod_ids: set[str], timeout_s: float) -> None:
        """Wait until every Envoy lists exactly these pods, all HEALTHY, in the gateway
        cluster."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                views = [
                    await _pool_hosts(session, envoy.admin_port)
                    for envoy in self._ctx.info.envoys.values()
                ]
                if all(
                    set(hosts) == pod_ids and set(hosts.values()) == {"HEALTHY"} for hosts in views
                ):
                    return
                await asyncio.sleep(0.1)
        raise StartupError(f"Envoy did not list {sorted(pod_ids)} as healthy in {timeout_s} s")

    # -- round trips -----------------------------------------------------

    async def wait_round_trip(self, timeout_s: float) -> None:
        """Wait until a WebSocket message makes it through every Envoy and back (the first
        Envoy alone with the SSE or long-poll probe)."""
        deadline = time.monotonic() + timeout_s
        last_error = "no attempt"
        urls = list(self._envoys.client_urls.values())[0 if self._ctx.l4_admin_port else 1 :]
        probe = self._ctx.options.probe
        pending = urls if probe == "websocket" else []
        while time.monotonic() < deadline:
            try:
                await self.round_trip(PROBE_USER, "wsfleet-startup-probe", probe)
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
        client_tls = self._ctx.client_tls
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"{url or self._envoys.client_url}?user={user_id}",
                headers={"Authorization": f"Bearer {self._ctx.keys.token(user_id)}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                ssl=client_tls if client_tls else True,
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
            self._envoys.client_url,
            user_id,
            self._ctx.keys.token(user_id),
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


async def wait_listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_listening("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise StartupError(f"nothing listens on port {port} after {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def _checks(
    session: aiohttp.ClientSession, base: str, pool: str = DEFAULT_POOL
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


async def _pool_hosts(
    session: aiohttp.ClientSession, admin_port: int, pool: str = DEFAULT_POOL
) -> dict[str, str]:
    """An Envoy's view of a pool: pod id -> HEALTHY, DRAINING, UNHEALTHY..."""
    url = f"http://127.0.0.1:{admin_port}/clusters?format=json"
    async with session.get(url) as response:
        status = await response.json(content_type=None)
    return {
        host.get("hostname", ""): routable(host.get("health_status", {}))
        for cluster in status.get("cluster_statuses", [])
        if cluster.get("name") == pool
        for host in cluster.get("host_statuses", [])
    }


def routable(health: dict[str, Any]) -> str:
    """HEALTHY when EDS says so and no active health check failed (or is pending)."""
    if health.get("failed_active_health_check") or health.get("pending_active_hc"):
        return "UNHEALTHY"
    return str(health.get("eds_health_status", "HEALTHY"))
