"""Helpers for integration tests: clients through Envoy, Envoy admin views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from wsfleet.launcher.fleet import LocalFleet

POD_HEADER = "x-wsfleet-pod"


def unlimited_session() -> aiohttp.ClientSession:
    """A client session that can hold many WebSockets (the default connector caps at 100)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def open_ws(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """Connect ``user`` through Envoy; returns the socket and the pod that holds it."""
    ws = await session.ws_connect(
        f"{fleet.client_url}?user={user}",
        headers={"Authorization": f"Bearer {fleet.token(user)}"},
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )
    pod = ws._response.headers.get(POD_HEADER, "")
    return ws, pod


async def pod_of(fleet: LocalFleet, session: aiohttp.ClientSession, user: str) -> str:
    ws, pod = await open_ws(fleet, session, user)
    await ws.close()
    return pod


async def envoy_get(fleet: LocalFleet, path: str) -> Any:
    url = f"http://127.0.0.1:{fleet.info.envoy_admin_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if "json" in response.headers.get("Content-Type", "") or "format=json" in path:
            return await response.json(content_type=None)
        return await response.text()


async def cluster_hosts(fleet: LocalFleet, cluster: str) -> dict[str, str]:
    """Envoy's view of ``cluster``: hostname (pod id) -> EDS health status."""
    status = await envoy_get(fleet, "/clusters?format=json")
    for entry in status.get("cluster_statuses", []):
        if entry["name"] == cluster:
            return {
                host.get("hostname", ""): host.get("health_status", {}).get(
                    "eds_health_status", "HEALTHY"
                )
                for host in entry.get("host_statuses", [])
            }
    return {}


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.05
) -> float:
    """Poll ``check`` until true; returns seconds waited, raises TimeoutError otherwise."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"condition not met in {timeout_s} s")
        await asyncio.sleep(interval_s)
