"""The L4 tier in front of the L7 Envoys (``wsfleet up --envoys N``, N >= 2): it spreads
new connections over the Envoys, a draining Envoy leaves its pool for new connections while
its own connections close only by the paced drain, and ``wsfleet rollout --envoys``
replaces the Envoys one at a time. One fleet of 2 Envoys and 1 sidecar for all of it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers import unlimited_session, until
from wsfleet_tools.launcher.control import LauncherControl
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.l4 import (
    CLUSTER,
    MAX_CONNECTIONS,
    READY_PATH,
    L4Params,
    render_l4_bootstrap,
    upstream_health,
)
from wsfleet_tools.launcher.rollout import envoy_rollout_refusal, node_synced

pytestmark = pytest.mark.integration

UPGRADES = "http.public.downstream_cx_upgrades_total"
ENVOYS = ("envoy", "envoy-2")


async def _upgrades(fleet: LocalFleet) -> dict[str, int]:
    """WebSocket upgrades each L7 Envoy has proxied (the L4's health checks are not any)."""
    counts = {}
    async with aiohttp.ClientSession() as session:
        for name in ENVOYS:
            url = f"http://127.0.0.1:{fleet.info.envoys[name].admin_port}/stats?filter=^{UPGRADES}$"
            async with session.get(url) as response:
                text = await response.text()
            counts[name] = int(text.partition(": ")[2] or 0)
    return counts


async def _connect(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str, url: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        f"{url or fleet.client_url}?user={user}",
        headers={"Authorization": f"Bearer {fleet.token(user)}"},
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )
    await ws.send_str("hello")  # an echo: the socket works end to end
    message = await ws.receive(timeout=10)
    assert message.data == "hello", message
    return ws


async def _admin(fleet: LocalFleet, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fleet.admin_url + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, (method, path, response.status, await response.text())
        return await response.json()


async def _closed_with(ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> int | None:
    message = await ws.receive(timeout=timeout_s)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
    return ws.close_code


def _l4_says(fleet: LocalFleet, name: str, in_pool: bool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await fleet.l4_health())[name] is in_pool

    return check


async def test_the_l4_spreads_connections_and_a_draining_envoy_leaves_only_its_pool(
    fleet_factory: Any,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1, envoys=2)
    assert fleet.client_url.endswith(f":{fleet.options.port}/ws")  # the L4 takes --port
    assert fleet.options.port not in {e.client_port for e in fleet.info.envoys.values()}
    assert await fleet.l4_health() == {"envoy": True, "envoy-2": True}
    async with unlimited_session() as session:
        # connections straight through each L7 Envoy: what each holds when one drains
        held = {
            name: [
                await _connect(fleet, session, f"held-{name}-{n}", fleet.client_urls[name])
                for n in range(2)
            ]
            for name in ENVOYS
        }
        before = await _upgrades(fleet)
        spread = [await _connect(fleet, session, f"spread-{n}") for n in range(6)]
        after = await _upgrades(fleet)
        assert all(after[name] > before[name] for name in ENVOYS), (before, after)
        assert sum(after.values()) - sum(before.values()) == 6
        for ws in spread:
            await ws.close()

        # envoy-2 drains: it leaves the L4 pool before any of its connections is closed
        drain = await _admin(
            fleet, "POST", "/envoys/drain", {"node": "envoy-2", "budget_s": 1, "delist_s": 4}
        )
        assert drain["state"] == "delisting", drain
        await until(_l4_says(fleet, "envoy-2", False), 10, "envoy-2 out of the L4 pool")
        view = await _admin(fleet, "GET", "/envoys/drain/envoy-2")
        assert view["state"] == "delisting", view  # nothing closed yet ...
        assert not any(ws.closed for ws in held["envoy-2"])  # ... and its clients still in
        before = await _upgrades(fleet)
        fresh = [await _connect(fleet, session, f"fresh-{n}") for n in range(4)]
        after = await _upgrades(fleet)
        assert after["envoy-2"] == before["envoy-2"], "a new connection went to the draining Envoy"
        assert after["envoy"] == before["envoy"] + 4

        # then the paced drain closes envoy-2's connections (1012), and only those
        codes = [await _closed_with(ws, 30) for ws in held["envoy-2"]]
        assert codes == [1012, 1012]
        await until(lambda: _drained(fleet), 30, "the control plane reports envoy-2 drained")
        for ws in [*held["envoy"], *fresh]:
            assert not ws.closed
            await ws.send_str("still here")
            assert (await ws.receive(timeout=10)).data == "still here"
            await ws.close()

        await _admin(fleet, "POST", "/envoys/undrain", {"node": "envoy-2"})
        await until(_l4_says(fleet, "envoy-2", True), 10, "envoy-2 back in the L4 pool")

        # wsfleet rollout --envoys, through the launcher's control socket (what `wsfleet up`
        # serves): each Envoy is replaced on its port while a client stays connected
        control = LauncherControl(fleet)
        await control.start()
        try:
            admin_ports = {name: e.admin_port for name, e in fleet.info.envoys.items()}
            client = await _connect(fleet, session, "rolled")
            closed = asyncio.create_task(_closed_with(client, 120))  # read as it comes
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    *(sys.executable, "-m", "wsfleet_tools", "rollout", "--envoys"),
                    *("--budget", "1", "--state-dir", str(fleet.state_dir)),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("rollout done: 2 Envoys replaced"), done.stdout
            assert "draining envoy-2" in done.stderr
            assert all(fleet.info.envoys[n].admin_port != admin_ports[n] for n in ENVOYS)
            assert await fleet.l4_health() == {"envoy": True, "envoy-2": True}
            assert await closed == 1012  # drained off its Envoy, not cut by its stop
            # the replacements serve, through the L4 and each on its own port
            for url in [fleet.client_url, *fleet.client_urls.values()]:
                ws = await _connect(fleet, session, "after-rollout", url)
                await ws.close()
        finally:
            await control.stop()


async def _drained(fleet: LocalFleet) -> bool:
    return bool((await _admin(fleet, "GET", "/envoys/drain/envoy-2"))["state"] == "drained")


def test_the_l4_bootstrap_checks_ready_never_panics_and_lifts_the_connection_caps() -> None:
    plain = yaml.safe_load(render_l4_bootstrap(L4Params(8080, (9001, 9002))))
    [listener] = plain["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 8080
    [cluster] = plain["static_resources"]["clusters"]
    assert cluster["name"] == CLUSTER
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [9001, 9002]
    [check] = cluster["health_checks"]
    assert check["http_health_check"]["path"] == READY_PATH
    assert check["unhealthy_threshold"] == 1
    assert check["no_traffic_interval"] == check["interval"]
    assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == MAX_CONNECTIONS
    assert "transport_socket_matches" not in cluster
    tls = yaml.safe_load(render_l4_bootstrap(L4Params(8080, (9001,), upstream_tls=True)))
    [cluster] = tls["static_resources"]["clusters"]
    [match] = cluster["transport_socket_matches"]
    assert cluster["health_checks"][0]["transport_socket_match_criteria"] == match["match"]
    assert "transport_socket" not in cluster  # the proxied bytes pass through untouched


def test_the_l4_view_and_the_ack_check_read_what_envoy_and_the_control_plane_show() -> None:
    host = {"address": {"socket_address": {"port_value": 9001}}}
    clusters = {
        "cluster_statuses": [
            {"name": "other", "host_statuses": [{**host, "health_status": {}}]},
            {
                "name": CLUSTER,
                "host_statuses": [
                    {**host, "health_status": {"eds_health_status": "HEALTHY"}},
                    {
                        "address": {"socket_address": {"port_value": 9002}},
                        "health_status": {"failed_active_health_check": True},
                    },
                ],
            },
        ]
    }
    assert upstream_health(clusters) == {9001: True, 9002: False}
    synced = {"version": "v2"}
    node = {
        "connected": True,
        "connected_at": 100.0,
        "types": {
            "cds": {"sent": synced, "acked": synced},
            "lds": {"sent": synced, "acked": synced},
        },
    }
    assert node_synced(node, since=99.0)
    assert not node_synced(node, since=101.0)  # the old stream, not the replacement's
    behind = {
        **node,
        "types": {**node["types"], "lds": {"sent": synced, "acked": {"version": "v1"}}},
    }
    assert not node_synced(behind, since=99.0)
    assert not node_synced({**node, "connected": False}, since=99.0)
    assert envoy_rollout_refusal(1) is not None and "at least 2" in str(envoy_rollout_refusal(1))
    assert envoy_rollout_refusal(2) is None
