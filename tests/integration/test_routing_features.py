"""Routing features pushed over RDS/EDS, seen through real Envoy traffic."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import cluster_hosts, envoy_stats, open_ws, pod_of, unlimited_session, wait_for
from tests.policies import websocket_policy
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

RATE_LIMITED = websocket_policy(route={"upgrade_rate_limit": {"per_second": 3, "burst": 3}})
STANDBY = websocket_policy(pool={"locality_priority": ["region-a", "region-b"]})


async def _upgrade_status(fleet: LocalFleet, session: aiohttp.ClientSession, user: str) -> int:
    try:
        ws, _ = await open_ws(fleet, session, user)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    await ws.close()
    return 101


async def test_a_route_upgrade_rate_limit_answers_429_past_its_bucket(
    fleet_factory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(RATE_LIMITED)
    fleet: LocalFleet = await fleet_factory(policy_path=policy, sidecars=1)
    await asyncio.sleep(1.1)  # the startup probe used a token: start from a full bucket
    async with unlimited_session() as session:
        statuses = await asyncio.gather(
            *(_upgrade_status(fleet, session, f"user-{n}") for n in range(12))
        )
    counts = collections.Counter(statuses)
    assert counts[101] <= 4 and counts[101] >= 2, counts  # a bucket of 3 (+1 refill at most)
    assert counts[429] == 12 - counts[101], counts
    stats = await envoy_stats(fleet, "route_websocket")
    assert stats.get("route_websocket.http_local_rate_limit.rate_limited", 0) == counts[429]


async def test_the_standby_region_takes_users_only_when_the_primary_is_gone(
    fleet_factory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(STANDBY)
    fleet: LocalFleet = await fleet_factory(
        policy_path=policy, sidecars=1, sidecar_args=("--region", "region-a")
    )
    await fleet.start_sidecar(("--region", "region-b"))  # sidecar-2: the warm standby
    await wait_for(lambda: _hosts_are(fleet, {"sidecar-1", "sidecar-2"}), 5)
    async with unlimited_session() as session:
        primary = {await pod_of(fleet, session, f"user-{n}") for n in range(30)}
        assert primary == {"sidecar-1"}
        await fleet.stop_sidecar("sidecar-1")
        await wait_for(lambda: _hosts_are(fleet, {"sidecar-2"}), 5)
        standby = {await pod_of(fleet, session, f"user-{n}") for n in range(30)}
        assert standby == {"sidecar-2"}
        await fleet.start_sidecar(("--region", "region-a"))  # sidecar-3: primary is back
        await wait_for(lambda: _hosts_are(fleet, {"sidecar-2", "sidecar-3"}), 5)
        back = {await pod_of(fleet, session, f"user-{n}") for n in range(30)}
        assert back == {"sidecar-3"}


async def _hosts_are(fleet: LocalFleet, expected: set[str]) -> bool:
    return set(await cluster_hosts(fleet, "gateways")) == expected


async def test_a_client_cannot_choose_its_gateway_by_varying_the_hash_key(fleet_factory) -> None:
    """Envoy hashes the first key present (header, then query); the gateway checks that same
    value and refuses a header and a query that disagree."""
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    token = fleet.token("alice")
    async with unlimited_session() as session:

        async def attempt(query_user: str | None) -> tuple[int, str]:
            query = f"?user={query_user}" if query_user else ""
            try:
                ws = await session.ws_connect(
                    fleet.client_url + query,
                    headers={"Authorization": f"Bearer {token}", "x-user-id": "alice"},
                )
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status, ""
            pod = ws._response.headers.get("x-wsfleet-pod", "") if ws._response else ""
            await ws.close()
            return 101, pod

        home = await attempt(None)
        assert home[0] == 101
        assert await attempt("alice") == home
        for n in range(16):
            assert await attempt(f"mallory-{n}") == (400, "")


def hashed_on(header: str) -> str:
    return websocket_policy(pool={"hash_key": {"header": header, "query_parameter": "user"}})


async def test_the_gateways_check_the_hash_key_the_policy_names_and_follow_its_edits(
    fleet_factory, tmp_path: Path
) -> None:
    """The policy's hash key is the one definition: Envoy hashes on it, and the gateways
    learn it from the control plane, so an edit to it reaches both (the gateway used to
    check a header of its own settings, and every handshake failed after such an edit)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(hashed_on("x-account"))
    fleet: LocalFleet = await fleet_factory(
        policy_path=policy, sidecars=1, xds_args=("--policy-poll", "0.1")
    )
    token = fleet.token("alice")
    async with unlimited_session() as session:

        async def status(headers: dict[str, str]) -> int:
            try:
                ws = await session.ws_connect(
                    f"{fleet.client_url}?user=alice",
                    headers={"Authorization": f"Bearer {token}", **headers},
                )
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status
            await ws.close()
            return 101

        assert await status({"x-account": "alice"}) == 101  # the policy's header, same user
        assert await status({"x-account": "mallory"}) == 400  # it names another: ambiguous
        assert await status({"x-user-id": "mallory"}) == 101  # not a hash source here

        policy.write_text(hashed_on("x-user-id"))

        async def edited() -> bool:
            return await status({"x-user-id": "mallory"}) == 400

        await wait_for(edited, 15)  # the edit reached Envoy and the gateway
        assert await status({"x-account": "mallory"}) == 101
        assert await status({"x-user-id": "alice"}) == 101
