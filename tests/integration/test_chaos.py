"""Chaos at CI size: pods killed in batches under load, control plane and Redis restarted,
a lossy and a blackholed network. The same scenarios run larger in benchmarks/chaos.py."""

from __future__ import annotations

import asyncio
import collections
import gc
import signal
import time

import aiohttp
import pytest

from tests.helpers import dynamic_config, unlimited_session, wait_for
from wsfleet.registry import RegistryUnavailable
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet_client import Backoff
from wsfleet_client.client import Client
from wsfleet_tools.chaos.faults import Faults
from wsfleet_tools.chaos.proxy import FaultProxy
from wsfleet_tools.chaos.reconnects import peak_to_mean
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration


async def _streaming_clients(
    fleet: LocalFleet,
    session: aiohttp.ClientSession,
    count: int,
    stream: str,
    reconnects: list[tuple[float, str]],
) -> tuple[list[Client], list[asyncio.Task[list[str]]]]:
    clients = []
    for n in range(count):
        client = Client(
            fleet.client_url,
            f"user-{n}",
            fleet.token(f"user-{n}"),
            session=session,
            backoff=Backoff(base_s=0.5, cap_s=5.0),
            on_connect=lambda pod: reconnects.append((time.monotonic(), pod)),
        )
        client.start()
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 120)
    gc.freeze()  # hundreds of clients in one process: keep collector pauses out of the timings
    reconnects.clear()
    for client in clients:
        await client.send(stream)

    async def collect(client: Client, expected: int) -> list[str]:
        got: list[str] = []
        async for message in client:
            got.append(str(message.data))
            if len(got) >= expected:
                break
        return got

    expected = int(stream.split()[1])
    readers = [asyncio.create_task(asyncio.wait_for(collect(c, expected), 180)) for c in clients]
    return clients, readers


async def _registry_holds(fleet: LocalFleet, clients: int) -> bool:
    """Whether the registry has every pod and each of ``clients`` users' one connection,
    under its user and under its pod (False while Redis cannot answer)."""
    registry = RedisRegistry(fleet.info.redis_url)
    try:
        held = sum([len(await registry.connections_of_pod(pod)) for pod in fleet.info.sidecars])
        users = [len(await registry.connections_of_user(f"user-{n}")) for n in range(clients)]
        pods = {pod.pod_id for pod in await registry.list_pods()}
    except RegistryUnavailable:
        return False  # restarting, or the cluster client still finding the new master
    finally:
        await registry.close()
    return held == clients and users == [1] * clients and pods == set(fleet.info.sidecars)


async def test_killing_one_then_two_of_four_pods_moves_only_their_clients_without_loss(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=4)
    reconnects: list[tuple[float, str]] = []
    async with unlimited_session() as session:
        clients, readers = await _streaming_clients(
            fleet, session, 600, "/stream 20 1000", reconnects
        )
        home = {client: client.pod for client in clients}
        await asyncio.sleep(3)
        first_kill = time.monotonic()
        await fleet.stop_sidecar("sidecar-1", sig=signal.SIGKILL)
        await asyncio.sleep(5)
        second_kill = time.monotonic()
        for pod in ("sidecar-2", "sidecar-3"):
            fleet.info.sidecars[pod].child.process.send_signal(signal.SIGKILL)
        for pod in ("sidecar-2", "sidecar-3"):
            await fleet.stop_sidecar(pod, sig=signal.SIGKILL)
        received = await asyncio.gather(*readers)
        errors: collections.Counter[str] = collections.Counter()
        for c in clients:
            errors.update(c.stats.errors)
        print(errors.most_common(8))
        attempts = sum(c.stats.attempts for c in clients)
        failures = sum(c.stats.failures for c in clients)
        pods_now = {client: client.pod for client in clients}
        for client in clients:
            await client.close()
        gc.unfreeze()

    expected = [f"stream-{n}" for n in range(1, 21)]
    assert all(got == expected for got in received)  # nothing lost, nothing twice
    for client in clients:
        if home[client] == "sidecar-4":
            assert client.stats.connects == 1  # never touched
        else:
            assert client.stats.connects >= 2 and pods_now[client] == "sidecar-4"
    survivors_of_first = [c for c in clients if home[c] in ("sidecar-2", "sidecar-3", "sidecar-4")]
    assert all(c.stats.pods[1:2] != ["sidecar-1"] for c in survivors_of_first)
    success = 1 - failures / attempts
    attempts_at = [t for c in clients for t in c.stats.due_at]  # when retries were due
    first = [t for t in attempts_at if first_kill <= t < second_kill]
    second = [t for t in attempts_at if t >= second_kill]
    print(
        f"\nkill 1 of 4: {len(first)} reconnect attempts, peak/mean per 100 ms "
        f"{peak_to_mean(first):.2f}; kill 2 of 3: {len(second)} attempts, "
        f"peak/mean {peak_to_mean(second):.2f}; handshake success {success:.5f} "
        f"({failures} failures in {attempts} attempts)"
    )
    assert len(first) >= 100  # about a quarter (150) of the clients lost their pod at once
    assert peak_to_mean(first) <= 3.0
    assert peak_to_mean(second) <= 3.0
    assert success >= 0.9995


async def test_restarting_the_control_plane_and_redis_drops_no_live_connection(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=3, sidecar_args=("--registry-refresh", "0.5", "--connection-flush", "0.5")
    )
    before = await dynamic_config(fleet)
    reconnects: list[tuple[float, str]] = []
    async with unlimited_session() as session:
        clients, readers = await _streaming_clients(
            fleet, session, 300, "/stream 16 500", reconnects
        )
        await asyncio.sleep(1.5)
        await fleet.restart_xds(down_s=1.0)
        await asyncio.sleep(1.0)
        await fleet.stop_redis()
        await asyncio.sleep(1.0)
        await fleet.start_redis()
        received = await asyncio.gather(*readers)

        await wait_for(lambda: _registry_holds(fleet, 300), 60, interval_s=0.5)
        assert await dynamic_config(fleet) == before
        assert await fleet.round_trip("newcomer", "still works") == "still works"
        for client in clients:
            await client.close()
    assert reconnects == []  # no live connection dropped
    assert all(got == [f"stream-{n}" for n in range(1, 17)] for got in received)


async def test_heartbeats_spare_lossy_clients_and_cut_blackholed_ones(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=1, sidecar_args=("--heartbeat-interval", "1", "--heartbeat-timeout", "2")
    )
    sidecar = fleet.info.sidecars["sidecar-1"]
    envoy_port = fleet.options.port
    async with (
        FaultProxy(
            "127.0.0.1", envoy_port, faults=Faults(loss=0.05, latency_s=0.05), seed=1
        ) as lossy,
        FaultProxy("127.0.0.1", envoy_port, seed=2) as doomed,
        unlimited_session() as session,
    ):

        async def connect(port: int, user: str) -> aiohttp.ClientWebSocketResponse:
            return await session.ws_connect(
                f"ws://127.0.0.1:{port}/ws?user={user}",
                headers={"Authorization": f"Bearer {fleet.token(user)}"},
            )

        readers = []
        lossy_clients = []
        for n in range(40):  # each starts reading (answering pings) as soon as it is open
            lossy_clients.append(await connect(lossy.port, f"lossy-{n}"))
            readers.append(asyncio.create_task(_keep_reading(lossy_clients[-1])))
        victim = await connect(doomed.port, "victim")
        readers.append(asyncio.create_task(_keep_reading(victim)))
        await asyncio.sleep(2)
        doomed.set(Faults(blackhole=True))  # the socket stays open; nothing gets through
        started = time.monotonic()

        async def metric(name: str) -> float:
            async with session.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics") as response:
                for line in (await response.text()).splitlines():
                    if line.startswith(f"{name} "):
                        return float(line.split()[1])
            return 0.0

        async def dead_count() -> float:
            return await metric("wsfleet_gateway_dead_connections_total")

        for _ in range(80):
            value = await dead_count()
            if value >= 1:
                break
            await asyncio.sleep(0.1)
        detected_s = time.monotonic() - started
        print(f"\nblackholed client cut after {detected_s:.2f} s (dead count {value:g})")
        # the lossy ones keep answering: no false positive over six more heartbeat
        # rounds (counted in pongs, 40 per round less the lost, not in seconds)
        pongs = await metric("wsfleet_gateway_ping_rtt_seconds_count")

        async def six_rounds_later() -> bool:
            return await metric("wsfleet_gateway_ping_rtt_seconds_count") >= pongs + 6 * 36

        await wait_for(six_rounds_later, 120, interval_s=0.2)
        assert await dead_count() == 1.0
        assert all(not ws.closed for ws in lossy_clients)
        assert detected_s <= 1 + 2 + 1  # interval + timeout, plus the check's slack
        for task in readers:
            task.cancel()
        for ws in lossy_clients:
            await ws.close()


async def _keep_reading(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read everything (aiohttp answers the gateway's pings while reading)."""
    async for _ in ws:
        pass


async def _equals(value: object, expected: float) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_losing_a_redis_cluster_master_under_load_drops_no_live_connection(
    fleet_factory,
) -> None:
    """Replication is asynchronous: what the dead master had not passed on is lost, and
    the gateways write it again (registry records) or the clients learn of it (a resume
    older than the window gets a resync). Live connections see none of it."""
    fleet: LocalFleet = await fleet_factory(
        sidecars=2,
        redis_cluster=3,
        redis_replicas=1,
        sidecar_args=("--registry-refresh", "0.5", "--connection-flush", "0.5"),
    )
    reconnects: list[tuple[float, str]] = []
    async with unlimited_session() as session:
        clients, readers = await _streaming_clients(
            fleet, session, 200, "/stream 16 500", reconnects
        )
        await asyncio.sleep(1.5)  # streaming: then a master dies (its replica takes over)
        await fleet.kill_redis_master("redis-1")
        received = await asyncio.gather(*readers)

        await wait_for(lambda: _registry_holds(fleet, 200), 60, interval_s=0.5)
        assert await fleet.round_trip("newcomer", "still works") == "still works"
        for client in clients:
            await client.close()
    assert reconnects == []  # no live connection dropped
    assert all(got == [f"stream-{n}" for n in range(1, 17)] for got in received)
