"""Two regions on loopback: each an Envoy with its own control plane over one registry;
region B a warm standby for region A's clients by locality priority."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import unlimited_session, wait_for
from tests.policies import websocket_policy
from wsfleet_client import Backoff
from wsfleet_client.client import Client
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

POLICY = websocket_policy(  # each region's Envoy sends its clients home first
    pool={"locality_priority": ["region-a", "region-b"], "prefer_local_region": True}
)


def _clients(
    url: str, fleet: LocalFleet, session: aiohttp.ClientSession, prefix: str, count: int
) -> list[Client]:
    clients = []
    for n in range(count):
        user = f"{prefix}-{n}"
        client = Client(
            url, user, fleet.token(user), session=session, backoff=Backoff(base_s=0.2, cap_s=2)
        )
        client.start()
        clients.append(client)
    return clients


async def test_region_a_fails_over_to_its_standby_and_comes_back(
    fleet_factory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    fleet: LocalFleet = await fleet_factory(sidecars=2, policy_path=policy, region="region-a")
    await fleet.start_sidecar(("--region", "region-b"))  # sidecar-3: region B's gateway
    edge_b = await fleet.add_edge("region-b")
    region_a = {"sidecar-1", "sidecar-2"}
    async with unlimited_session() as session:
        await fleet.wait_hosts_healthy({"sidecar-1", "sidecar-2", "sidecar-3"}, 10)
        a_clients = _clients(fleet.client_url, fleet, session, "a", 100)
        b_clients = _clients(edge_b.client_url, fleet, session, "b", 20)
        everyone = [*a_clients, *b_clients]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in everyone)), 30)
        assert {c.pod for c in a_clients} <= region_a  # home region first
        assert {c.pod for c in b_clients} == {"sidecar-3"}

        killed_at = time.monotonic()
        for pod in sorted(region_a):  # region A's gateways are lost
            fleet.info.sidecars[pod].child.process.send_signal(signal.SIGKILL)
        for pod in sorted(region_a):
            await fleet.stop_sidecar(pod, sig=signal.SIGKILL)

        async def failed_over() -> bool:
            return all(c.connected.is_set() and c.pod == "sidecar-3" for c in a_clients)

        await wait_for(failed_over, 20, interval_s=0.05)
        failover_s = time.monotonic() - killed_at
        print(f"\nregion failover: {len(a_clients)} clients on region B after {failover_s:.2f} s")
        assert all(c.stats.connects == 1 for c in b_clients)  # region B's own clients untouched

        back = await fleet.start_sidecar(("--region", "region-a"))  # region A recovers
        await fleet.wait_hosts_healthy({"sidecar-3", back.pod_id}, 10)
        newcomer = _clients(fleet.client_url, fleet, session, "late", 10)
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in newcomer)), 15)
        assert {c.pod for c in newcomer} == {back.pod_id}  # new sessions go home again
        for client in [*everyone, *newcomer]:
            await client.close()
    assert failover_s < 10
