"""Resumable sessions over WebSocket, SSE and long polling, through the real fleet."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.helpers import ON_EVERY_REDIS, unlimited_session, until, wait_for
from wsfleet_client import Backoff
from wsfleet_client.client import Client
from wsfleet_tools.chaos.reconnects import peak_to_mean
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration


def _client(
    fleet: LocalFleet,
    session: aiohttp.ClientSession,
    user: str,
    base_s: float = 0.1,
    **options: object,
) -> Client:
    client = Client(
        fleet.client_url,
        user,
        fleet.token(user),
        session=session,
        backoff=Backoff(base_s=base_s, cap_s=max(2.0, base_s * 4)),
        **options,  # type: ignore[arg-type]
    )
    client.start()
    return client


async def _collect(client: Client, count: int, timeout_s: float = 30) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []

    async def read() -> None:
        async for message in client:
            got.append((message.seq, str(message.data)))
            if len(got) >= count:
                return

    await asyncio.wait_for(read(), timeout_s)
    return got


@pytest.mark.parametrize("transport", ["websocket", "sse", "poll"])
async def test_the_same_conversation_over_each_transport(fleet_factory, transport: str) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    async with unlimited_session() as session:
        client = _client(fleet, session, "alice", transports=(transport,))
        await asyncio.wait_for(client.connected.wait(), 10)
        assert client.transport == transport
        await client.send("hello")
        await client.send("/stream 20 5")
        got = await _collect(client, 21)
        await client.close()
    assert [data for _, data in got] == ["hello"] + [f"stream-{n}" for n in range(1, 21)]
    assert [seq for seq, _ in got] == list(range(1, 22))


@ON_EVERY_REDIS
async def test_quotas_and_rate_limits_apply_across_transports(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=1,
        redis_cluster=redis_cluster,
        sidecar_args=(
            "--max-connections-per-user",
            "2",
            "--messages-per-second",
            "3",
            "--message-burst",
            "3",
        ),
    )
    async with unlimited_session() as session:
        ws = _client(fleet, session, "alice", transports=("websocket",))
        sse = _client(fleet, session, "alice", transports=("sse",))
        await asyncio.wait_for(asyncio.gather(ws.connected.wait(), sse.connected.wait()), 10)
        url = fleet.client_url.replace("ws://", "http://").replace("/ws", "/poll")
        async with session.get(
            url, params={"user": "alice", "access_token": fleet.token("alice")}
        ) as third:
            assert third.status == 429
            assert (await third.json())["error"] == "user_quota"
        closes: list[int] = []
        sse._on_close = lambda code, reason: closes.append(code)
        for n in range(10):
            await sse.send(f"m{n}")
        await wait_for(lambda: _true(bool(closes)), 10)
        assert closes[0] == 1008  # the SSE session was cut for its rate, like a WebSocket
        await ws.close()
        await sse.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_resent_message_is_not_delivered_twice(one_gateway) -> None:
    fleet: LocalFleet = one_gateway
    async with unlimited_session() as session:
        url = f"{fleet.client_url}?user=alice&access_token={fleet.token('alice')}"
        ws = await session.ws_connect(url, protocols=("wsfleet.v1",))
        welcome = json.loads((await ws.receive(timeout=5)).data)
        await ws.send_str(json.dumps({"type": "message", "cseq": 1, "data": "once"}))
        assert json.loads((await ws.receive(timeout=5)).data)["data"] == "once"
        await ws.close()
        again = await session.ws_connect(
            f"{url}&session={welcome['session']}&last_seq=1", protocols=("wsfleet.v1",)
        )
        resumed = json.loads((await again.receive(timeout=5)).data)
        assert (
            resumed["resumed"] and resumed["cseq"] == 1 and resumed["session"] == welcome["session"]
        )
        await again.send_str(json.dumps({"type": "message", "cseq": 1, "data": "once"}))  # a resend
        await again.send_str(json.dumps({"type": "message", "cseq": 2, "data": "twice"}))
        reply = json.loads((await again.receive(timeout=5)).data)
        assert (reply["seq"], reply["data"]) == (2, "twice")  # "once" was not echoed again
        await again.close()


async def test_outside_the_replay_window_the_client_is_told_to_resync(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1, sidecar_args=("--replay-max-age", "1"))
    async with unlimited_session() as session:
        url = f"{fleet.client_url}?user=alice&access_token={fleet.token('alice')}"
        ws = await session.ws_connect(url, protocols=("wsfleet.v1",))
        welcome = json.loads((await ws.receive(timeout=5)).data)
        await ws.send_str(json.dumps({"type": "message", "cseq": 1, "data": "x"}))
        await ws.receive(timeout=5)
        await ws.close()
        await asyncio.sleep(2.5)  # longer than the replay window's age
        again = await session.ws_connect(
            f"{url}&session={welcome['session']}&last_seq=1", protocols=("wsfleet.v1",)
        )
        hello = json.loads((await again.receive(timeout=5)).data)
        assert hello["resync"] is True and hello["resumed"] is False
        assert hello["session"] != welcome["session"]
        await again.close()


async def test_a_replay_buffer_with_a_hole_gives_a_resync_never_a_silent_gap(
    fleet_factory,
) -> None:
    """What a Redis failover can do to a replay buffer (the old master had not passed an
    entry on), done by hand: the resume is refused as a resync."""
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    async with unlimited_session() as session:
        url = f"{fleet.client_url}?user=alice&access_token={fleet.token('alice')}"
        ws = await session.ws_connect(url, protocols=("wsfleet.v1",))
        welcome = json.loads((await ws.receive(timeout=5)).data)
        for cseq in (1, 2, 3):
            await ws.send_str(json.dumps({"type": "message", "cseq": cseq, "data": f"m{cseq}"}))
            assert json.loads((await ws.receive(timeout=5)).data)["seq"] == cseq
        await ws.close()
        stream = f"wsfleet:replay:{{{welcome['session']}}}"
        redis = aioredis.Redis.from_url(fleet.info.redis_url)
        try:
            assert await redis.xlen(stream) == 3
            assert await redis.xdel(stream, "2-1") == 1  # the hole, between 1 and 3
        finally:
            await redis.aclose()
        again = await session.ws_connect(  # saw nothing: 1, 2 and 3 are to be replayed
            f"{url}&session={welcome['session']}&last_seq=0", protocols=("wsfleet.v1",)
        )
        hello = json.loads((await again.receive(timeout=5)).data)
        assert hello["resync"] is True and hello["replayed"] == 0
        await again.close()


async def _stream_through(
    fleet: LocalFleet, disrupt, count: int = 40, clients: int = 200
) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """``clients`` SDK clients each receive ``count`` streamed messages while ``disrupt``
    runs; returns what they got and when they reconnected."""
    reconnects: list[float] = []
    async with unlimited_session() as session:
        tracked = []
        for n in range(clients):
            client = _client(
                fleet,
                session,
                f"user-{n}",
                base_s=0.5,  # a lost pod's clients retry spread over the first 500 ms
                on_connect=lambda pod: reconnects.append(time.monotonic()),
            )
            tracked.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in tracked)), 60)
        first_pods = {client: client.pod for client in tracked}
        reconnects.clear()
        for client in tracked:
            await client.send(f"/stream {count} 100")
        readers = [asyncio.create_task(_collect(client, count, timeout_s=90)) for client in tracked]
        await asyncio.sleep(1.0)  # a second of steady stream, then the disruption
        disrupted_at = time.monotonic()
        victim = await disrupt()
        received = await asyncio.gather(*readers)
        # a client closed as its stream ended reconnects after the close's hint, maybe after
        # its last message: every client of the victim has resumed elsewhere first
        moved = [client for client, pod in first_pods.items() if pod == victim]
        await until(
            lambda: all(c.pod != victim and c.stats.resumes >= 1 for c in moved),
            30,
            f"the {len(moved)} clients of {victim} resumed on another pod",
        )
        result = {
            "received": received,
            "clients": tracked,
            "first_pods": first_pods,
            "victim": victim,
            "reconnects": list(reconnects),
            "killed_at": disrupted_at,
        }
        for client in tracked:
            await client.close()
    return result


def _assert_exact(result: dict[str, object], count: int) -> None:
    expected = [f"stream-{n}" for n in range(1, count + 1)]
    for got in result["received"]:  # type: ignore[attr-defined]
        assert [data for _, data in got] == expected  # no gap, no duplicate, in order
    victim = result["victim"]
    moved = [c for c, pod in result["first_pods"].items() if pod == victim]  # type: ignore[attr-defined]
    assert moved, "the victim pod held clients"
    for client in moved:
        assert client.stats.resumes >= 1 and client.pod != victim


@ON_EVERY_REDIS
async def test_two_hundred_streams_survive_a_drain_without_gap_or_duplicate(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=3, redis_cluster=redis_cluster)

    async def drain() -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{fleet.admin_url}/drain",
                json={"pod": "sidecar-2", "budget_s": 2},
                headers={"Authorization": f"Bearer {fleet.admin_token}"},
            ) as response,
        ):
            assert response.status == 202
        return "sidecar-2"

    _assert_exact(await _stream_through(fleet, drain), 40)


async def test_two_hundred_streams_survive_a_killed_pod_and_reconnects_are_spread(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=3)

    async def kill() -> str:
        await fleet.stop_sidecar("sidecar-3", sig=signal.SIGKILL)
        return "sidecar-3"

    result = await _stream_through(fleet, kill)
    _assert_exact(result, 40)
    times = sorted(  # when the lost pod's clients were due to reconnect
        t
        for client in result["clients"]  # type: ignore[attr-defined]
        for t in client.stats.due_at
        if t > result["killed_at"]  # type: ignore[operator]
    )
    spread = peak_to_mean(times)
    print(f"\nreconnect attempts after SIGKILL: {len(times)}, peak/mean per 100 ms {spread:.2f}")
    assert times and spread <= 3.0
