"""Subscribers over WebSocket, SSE and long polling, through the Python SDK, while one of
their gateways is SIGKILLed mid-stream: every subscriber ends with every publication
exactly once, in order (recovered from the channel's history on another gateway)."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest

from tests.helpers import ON_EVERY_REDIS, until
from wsfleet.tokens import mint_token, read_auth_key
from wsfleet_client import Backoff, Subscription
from wsfleet_client.client import Client
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

PUBLICATIONS = 150
PER_TRANSPORT = 8


async def _collect(subscription: Subscription, into: list[str]) -> None:
    async for publication in subscription:
        assert isinstance(publication.data, str)
        into.append(publication.data)


@ON_EVERY_REDIS
async def test_subscribers_of_a_killed_gateway_recover_every_publication_once_in_order(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=2, api_instances=1, redis_cluster=redis_cluster
    )
    key = read_auth_key(fleet.state_dir / "auth.key")
    clients: list[tuple[Client, list[str], str]] = []
    readers: list[asyncio.Task[None]] = []
    for transport in ("websocket", "sse", "poll"):
        for n in range(PER_TRANSPORT):
            user = f"{transport}-{n}"
            token = mint_token(key, user, extra_claims={"channels": ["feed:*"]})
            client = Client(
                fleet.client_url,
                user,
                token,
                transports=(transport,),
                backoff=Backoff(base_s=0.05, cap_s=0.5, max_elapsed_s=60),
            )
            client.start()
            received: list[str] = []
            subscription = client.subscribe("feed:recovery")
            readers.append(asyncio.create_task(_collect(subscription, received)))
            clients.append((client, received, transport))
    try:
        for client, _, _ in clients:
            await until(
                lambda c=client: c.subscriptions["feed:recovery"].subscribed.is_set(),
                30,
                "subscribed",
            )
        pods = {client.pod for client, _, _ in clients}
        assert pods == set(fleet.info.sidecars), "subscribers on both gateways"
        victim = next(iter(fleet.info.sidecars))
        async with aiohttp.ClientSession() as http:
            for n in range(1, PUBLICATIONS + 1):
                if n == PUBLICATIONS // 3:
                    await fleet.stop_sidecar(victim, sig=signal.SIGKILL)
                async with http.post(
                    f"{fleet.api_url}/publish",
                    data=json.dumps({"channel": "feed:recovery", "data": f"p{n}"}),
                    headers={"Authorization": f"Bearer {fleet.api_key}"},
                ) as response:
                    assert response.status == 200, await response.text()
                await asyncio.sleep(0.01)
        expected = [f"p{n}" for n in range(1, PUBLICATIONS + 1)]
        for _, received, transport in clients:
            await until(lambda r=received: len(r) >= PUBLICATIONS, 60, f"{transport} caught up")
        for client, received, transport in clients:
            assert received == expected, (transport, client.stats)
        moved = [c for c, _, _ in clients if c.stats.pods[0] == victim]
        assert moved and all(c.pod != victim for c in moved)
        recovered = sum(c.subscriptions["feed:recovery"].stats.recovered for c in moved)
        assert recovered >= len(moved)  # each came back by recovery, not from scratch
    finally:
        for reader in readers:
            reader.cancel()
        for client, _, _ in clients:
            await client.close()
