"""Helpers for integration tests: clients through Envoy, Envoy admin views."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from wsfleet_tools.launcher.fleet import LocalFleet

POD_HEADER = "x-wsfleet-pod"


def raw_upgrade(fleet: LocalFleet, user: str) -> bytes:
    """A WebSocket upgrade request for ``user`` with their token, as bytes for a raw socket."""
    return (
        f"GET /ws?user={user} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {fleet.token(user)}\r\n\r\n"
    ).encode()


def masked_text(payload: bytes) -> bytes:
    """A client's text frame (masked, final) of fewer than 126 bytes."""
    key = os.urandom(4)
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + key + body


@contextlib.asynccontextmanager
async def raw_connection(
    host: str, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection, closed on the way out."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield reader, writer
    finally:
        writer.close()


def unlimited_session() -> aiohttp.ClientSession:
    """A client session that can hold many WebSockets (the default connector caps at 100)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def open_ws(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str, url: str | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """Connect ``user`` through Envoy (the first, or the one at ``url``); returns the socket
    and the pod that holds it."""
    ws = await session.ws_connect(
        f"{url or fleet.client_url}?user={user}",
        headers={"Authorization": f"Bearer {fleet.token(user)}"},
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )
    pod = ws._response.headers.get(POD_HEADER, "")
    return ws, pod


async def pod_of(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str, url: str | None = None
) -> str:
    ws, pod = await open_ws(fleet, session, user, url)
    await ws.close()
    return pod


async def envoy_get(fleet: LocalFleet, path: str, envoy: str = "envoy") -> Any:
    """GET an Envoy's admin ``path`` (the first Envoy's unless named)."""
    url = f"http://127.0.0.1:{fleet.info.envoys[envoy].admin_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if "json" in response.headers.get("Content-Type", "") or "format=json" in path:
            return await response.json(content_type=None)
        return await response.text()


async def cluster_hosts(fleet: LocalFleet, cluster: str, envoy: str = "envoy") -> dict[str, str]:
    """An Envoy's view of ``cluster`` (the first Envoy's unless named): hostname (pod id) ->
    EDS health status."""
    status = await envoy_get(fleet, "/clusters?format=json", envoy)
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


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll ``check`` (plain or async) until true; seconds waited. A guard, not a speed:
    past ``timeout_s`` it fails naming ``what`` it waited for."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not seen in {timeout_s} s")
        await asyncio.sleep(0.02)


async def xds_get(fleet: LocalFleet, path: str) -> Any:
    url = f"http://127.0.0.1:{fleet.info.xds_admin_port}{path}"
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


async def envoy_stats(fleet: LocalFleet, prefix: str = "") -> dict[str, int]:
    text = await envoy_get(fleet, f"/stats?filter={prefix}" if prefix else "/stats")
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


def _strip_versions(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _strip_versions(item)
            for key, item in value.items()
            if key not in ("version_info", "last_updated")
        }
    if isinstance(value, list):
        return [_strip_versions(item) for item in value]
    return value


async def dynamic_config(fleet: LocalFleet) -> dict[str, Any]:
    """Envoy's dynamic config by kind and name, without versions and timestamps.

    Endpoints are reduced to (pod id, health) per cluster: their ports differ per fleet.
    """
    dump = await envoy_get(fleet, "/config_dump?include_eds")
    view: dict[str, Any] = {"listeners": {}, "routes": {}, "clusters": {}, "endpoints": {}}
    for section in dump["configs"]:
        kind = section["@type"].rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            for entry in section.get("dynamic_listeners", []):
                if "active_state" in entry:  # a rejected listener has only an error_state
                    view["listeners"][entry["name"]] = _strip_versions(entry["active_state"])
        elif kind == "RoutesConfigDump":
            for entry in section.get("dynamic_route_configs", []):
                config = entry["route_config"]
                view["routes"][config["name"]] = _strip_versions(config)
        elif kind == "ClustersConfigDump":
            for entry in section.get("dynamic_active_clusters", []):
                view["clusters"][entry["cluster"]["name"]] = _strip_versions(entry["cluster"])
        elif kind == "EndpointsConfigDump":
            for entry in section.get("dynamic_endpoint_configs", []):
                config = entry["endpoint_config"]
                view["endpoints"][config["cluster_name"]] = sorted(
                    (lb["endpoint"].get("hostname", ""), lb.get("health_status", "HEALTHY"))
                    for locality in config.get("endpoints", [])
                    for lb in locality.get("lb_endpoints", [])
                )
    return view


# Core flows run on one Redis and on a 3-master Redis Cluster the fleet starts itself:
# a test takes ``redis_cluster`` (masters; 0: one Redis) and passes it to fleet_factory.
ON_EVERY_REDIS = pytest.mark.parametrize("redis_cluster", [0, 3], ids=["redis", "redis-cluster"])
