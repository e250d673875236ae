"""The walking skeleton end to end: real Envoy, real Redis, 2 sidecars, real sockets."""

from __future__ import annotations

import collections

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.helpers import (
    ON_EVERY_REDIS,
    cluster_hosts,
    envoy_get,
    open_ws,
    pod_of,
    unlimited_session,
    wait_for,
)
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration


@ON_EVERY_REDIS
async def test_a_message_round_trips_through_envoy_sidecar_and_backend(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(redis_cluster=redis_cluster)
    async with unlimited_session() as session:
        ws, pod = await open_ws(fleet, session, "alice")
        await ws.send_str("hello, fleet")
        reply = await ws.receive(timeout=5)
        await ws.close()
    assert reply.type is aiohttp.WSMsgType.TEXT
    assert reply.data == "hello, fleet"
    assert pod in {"sidecar-1", "sidecar-2"}
    if redis_cluster:  # the fleet's keys are spread over the masters, not on one
        holding = 0
        for node in fleet.redis_nodes:
            client = aioredis.Redis(port=node.port)
            holding += int(await client.dbsize() > 0)
            await client.aclose()
        assert holding >= 2


async def test_a_broadcast_reaches_every_connection_on_every_sidecar(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(broadcasters=("user-0",))
    async with unlimited_session() as session:
        sockets = {}
        for n in range(12):
            sockets[f"user-{n}"] = await open_ws(fleet, session, f"user-{n}")
        assert {pod for _, pod in sockets.values()} == {"sidecar-1", "sidecar-2"}
        # an echo from each proves its backend knows the session (the gateway tells the
        # backend of a session before any message of it): sessions opened a moment ago on
        # another pod could otherwise miss a broadcast sent at once
        for ws, _ in sockets.values():
            await ws.send_str("ready")
            assert (await ws.receive(timeout=10)).data == "ready"
        sender, _ = sockets["user-0"]
        await sender.send_str("/broadcast hello, everyone")
        got = [(await ws.receive(timeout=5)).data for ws, _ in sockets.values()]
        for ws, _ in sockets.values():
            await ws.close()
    assert got == ["hello, everyone"] * 12


async def test_envoy_takes_everything_but_the_xds_cluster_from_ads(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory()
    dump = await envoy_get(fleet, "/config_dump")
    sections = {config["@type"].rsplit(".", 1)[-1]: config for config in dump["configs"]}
    clusters = sections["ClustersConfigDump"]
    # static: the control plane, and the admin behind the stats port (its /stats/prometheus)
    static = sorted(c["cluster"]["name"] for c in clusters["static_clusters"])
    assert static == ["wsfleet.envoy_admin", "xds_cluster"]
    dynamic = [c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]]
    assert dynamic == ["api", "gateways"]  # the pools of the policy
    listeners = sections["ListenersConfigDump"]
    assert [e["listener"]["name"] for e in listeners["static_listeners"]] == ["wsfleet.stats"]
    assert [entry["name"] for entry in listeners["dynamic_listeners"]] == ["public"]
    routes = sections["RoutesConfigDump"]
    # static: only the stats listener's inline routes (its one path to the admin)
    assert [r["route_config"]["name"] for r in routes["static_route_configs"]] == ["stats"]
    assert [r["route_config"]["name"] for r in routes["dynamic_route_configs"]] == ["public"]
    by_name = {c["cluster"]["name"]: c["cluster"] for c in clusters["dynamic_active_clusters"]}
    assert by_name["gateways"]["lb_policy"] == "MAGLEV"
    assert "lb_policy" not in by_name["api"]  # ROUND_ROBIN, Envoy's default (not shown)


@ON_EVERY_REDIS
async def test_users_are_sticky_and_spread_and_a_stopped_sidecar_leaves_envoy(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(redis_cluster=redis_cluster)
    async with unlimited_session() as session:
        # one user: same sidecar over 20 reconnects
        pods = {await pod_of(fleet, session, "sticky-user") for _ in range(20)}
        assert len(pods) == 1, pods

        # 50 users: both sidecars get some
        placement = {f"user-{n}": await pod_of(fleet, session, f"user-{n}") for n in range(50)}
        per_pod = collections.Counter(placement.values())
        assert set(per_pod) == {"sidecar-1", "sidecar-2"}, per_pod

        # stopping one sidecar removes it from Envoy within 5 s
        assert set(await cluster_hosts(fleet, "gateways")) == {"sidecar-1", "sidecar-2"}
        await fleet.stop_sidecar("sidecar-2")

        async def gone() -> bool:
            return set(await cluster_hosts(fleet, "gateways")) == {"sidecar-1"}

        waited = await wait_for(gone, timeout_s=5.0)
        assert waited < 5.0

        # its users now land on the survivor; the survivor's users did not move
        moved = [user for user, pod in placement.items() if pod == "sidecar-2"]
        stayed = [user for user, pod in placement.items() if pod == "sidecar-1"]
        for user in moved + stayed:
            assert await pod_of(fleet, session, user) == "sidecar-1"


async def test_a_silent_sidecar_disappears_when_its_registration_expires(fleet_factory) -> None:
    import signal

    fleet: LocalFleet = await fleet_factory(
        sidecar_args=("--registry-ttl", "2", "--registry-refresh", "0.5")
    )
    assert set(await cluster_hosts(fleet, "gateways")) == {"sidecar-1", "sidecar-2"}
    await fleet.stop_sidecar("sidecar-1", sig=signal.SIGKILL)  # no goodbye: only the TTL tells

    async def gone() -> bool:
        return set(await cluster_hosts(fleet, "gateways")) == {"sidecar-2"}

    await wait_for(gone, timeout_s=30.0)  # a guard: the TTL is 2 s


async def test_the_readme_python_example_gets_its_echo(one_gateway, tmp_path) -> None:
    """The README's 10-line example, run as written (only the port differs)."""
    import asyncio
    import os
    import re
    import sys
    from pathlib import Path

    fleet: LocalFleet = one_gateway
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"From Python.*?```python\n(.*?)```", readme, re.S)
    assert example is not None
    script = tmp_path / "example.py"
    script.write_text(example.group(1).replace("127.0.0.1:8080", f"127.0.0.1:{fleet.options.port}"))
    env = {
        **os.environ,
        "WSFLEET_STATE_DIR": str(fleet.state_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "hello"
