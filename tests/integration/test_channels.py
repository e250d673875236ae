"""Channels and the server API through the real fleet: Envoy, two gateways, two server API
instances, Redis (one server, and a Redis Cluster where marked). Publications reach every
gateway's subscribers once; server-side subscriptions, sends and disconnects reach the
gateways holding a user; limits and bad input get their reasons; recovery gives exactly
what was missed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import shared_fleet
from tests.helpers import ON_EVERY_REDIS, unlimited_session, until
from tests.v1_client import V1Client
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """One fleet for the tests that only talk to it (each with users and channels of its
    own); the tests that kill a part start their own."""
    yield from shared_fleet(
        tmp_path_factory,
        "channels",
        sidecars=2,
        api_instances=2,
        # frames may be larger than the namespace's publications: its limit is what refuses
        sidecar_args=("--max-subscriptions", "3", "--max-message-bytes", "200000"),
    )


async def api(
    fleet: LocalFleet, method: str, body: Any, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fleet.api_url}/{method}",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {key or fleet.api_key}"},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _on_both_gateways(
    fleet: LocalFleet, http: aiohttp.ClientSession, prefix: str, claims: dict[str, object]
) -> list[V1Client]:
    """v1 clients, at least one on each gateway."""
    clients: list[V1Client] = []
    for n in range(40):
        clients.append(await V1Client.connect(fleet, http, f"{prefix}-{n}", claims))
        if len({c.pod for c in clients}) == 2 and len(clients) >= 4:
            return clients
    raise AssertionError("forty users on one gateway")


@ON_EVERY_REDIS
async def test_a_publication_reaches_every_subscriber_on_every_gateway_once(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=2, api_instances=2, redis_cluster=redis_cluster
    )
    async with unlimited_session() as http:
        clients = await _on_both_gateways(fleet, http, "reader", {"channels": ["feed:*"]})
        raw = await V1Client.connect(fleet, http, "raw-reader", {"subs": ["feed:news"]}, raw=True)
        for client in clients:
            answer = await client.request("subscribe", "feed:news")
            assert answer["type"] == "subscribed" and answer["recoverable"] is True
        for n in range(1, 4):
            status, body = await api(fleet, "publish", {"channel": "feed:news", "data": f"n{n}"})
            assert status == 200 and body["offset"] >= n
        for client in clients:
            pubs = await client.wait("pub", 3)
            assert [p["data"] for p in pubs] == ["n1", "n2", "n3"]
            offsets = [p["offset"] for p in pubs]
            assert offsets == list(range(offsets[0], offsets[0] + 3))
        await raw.wait("raw", 3)
        assert [f["data"] for f in raw.of("raw")] == ["n1", "n2", "n3"]  # the bare data
        received = 0.0
        for pod in fleet.info.sidecars.values():
            for line in await _metrics(pod.admin_port):
                if line.startswith("wsfleet_gateway_publications_received_total"):
                    received += float(line.split()[-1])
        assert received == 6  # 3 publications, each once per gateway (2)
        for pod in fleet.info.sidecars.values():  # delivery timed from the publish too
            port = pod.admin_port

            async def batch_timed(port: int = port) -> bool:
                return (await _delivery_times(port))["from_publish_count"] >= 1

            await until(batch_timed, 10, "a delivered batch timed")  # just after its write
            timed = await _delivery_times(port)
            assert timed["from_publish_count"] == timed["from_read_count"]
            assert 0 <= timed["from_read_sum"] <= timed["from_publish_sum"]
            assert timed["from_publish_sum"] < 5 * timed["from_publish_count"]


async def _delivery_times(admin_port: int) -> dict[str, float]:
    """A gateway's delivered batches: counts and sums, timed from the read and the publish."""
    names = {
        "wsfleet_gateway_delivery_seconds": "from_read",
        "wsfleet_gateway_delivery_from_publish_seconds": "from_publish",
    }
    found = dict.fromkeys(("from_read_count", "from_read_sum"), 0.0)
    found.update(dict.fromkeys(("from_publish_count", "from_publish_sum"), 0.0))
    for line in await _metrics(admin_port):
        name, _, value = line.partition(" ")
        base, _, kind = name.rpartition("_")
        if base in names and kind in ("count", "sum"):
            found[f"{names[base]}_{kind}"] = float(value)
    return found


async def _metrics(admin_port: int) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{admin_port}/metrics") as response,
    ):
        return (await response.text()).splitlines()


async def test_keys_scopes_and_bad_calls_get_clear_answers_and_change_nothing(
    fleet: LocalFleet,
) -> None:
    from server_api.keys import add_key

    publisher = add_key(fleet.api_keys_path, "publisher", ["publish"])
    await until(_key_works(fleet, publisher), 20, "the new key read by the API")
    assert (await api(fleet, "presence", {"channel": "chat:x"}, publisher))[0] == 403
    assert (await api(fleet, "publish", {"channel": "feed:a", "data": "x"}, "nope"))[0] == 401
    cases = [
        ("publish", {"channel": "feed:keys"}, 400, "give data"),
        ("publish", {"channel": "feed:keys", "data": "x", "extra": 1}, 400, "not 'extra'"),
        ("publish", {"channel": "bad name", "data": "x"}, 400, "channel name"),
        ("publish", {"channel": "nowhere:a", "data": "x"}, 400, "no namespace 'nowhere'"),
        ("publish", {"channel": "feed:keys", "data": "x" * 70_000}, 413, "at most 65536 bytes"),
        ("publish", [1, 2], 400, "JSON object"),
        ("history", {"channel": "chat:x", "limit": 0}, 400, "limit"),
        ("presence", {"channel": "feed:keys"}, 400, "keeps no presence"),
        ("disconnect", {"user": "u", "code": 1006}, 400, "code is"),
        ("teleport", {}, 404, "no method"),
    ]
    for method, body, status, words in cases:
        got, answer = await api(fleet, method, body)
        assert (got, words in answer.get("message", "")) == (status, True), (method, answer)
    big = await _post_raw(fleet, "publish", b"{" + b" " * (2 << 20) + b"}")
    assert big == 413
    status, history = await api(fleet, "history", {"channel": "feed:keys"})
    assert status == 200 and history["publications"] == []  # nothing was published


def _key_works(fleet: LocalFleet, key: str):  # type: ignore[no-untyped-def]
    """Every instance knows the key (each reads the keys file again on its own): calls
    through Envoy, which takes turns among them, succeed several times in a row."""

    async def check() -> bool:
        for _ in range(2 * len(fleet.info.apis)):
            status, _ = await api(fleet, "publish", {"channel": "feed:k", "data": "x"}, key)
            if status != 200:
                return False
        return True

    return check


async def _post_raw(fleet: LocalFleet, method: str, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fleet.api_url}/{method}",
            data=body,
            headers={"Authorization": f"Bearer {fleet.api_key}"},
        ) as response,
    ):
        return response.status


async def test_send_subscribe_unsubscribe_and_disconnect_reach_the_users_sessions(
    fleet: LocalFleet,
) -> None:
    async with unlimited_session() as http:
        first = await V1Client.connect(fleet, http, "dana")
        second = await V1Client.connect(fleet, http, "dana")
        other = await V1Client.connect(fleet, http, "erin")
        status, body = await api(fleet, "send", {"user": "dana", "data": "to both"})
        assert (status, body["gateways"]) == (200, 1)  # a user's sessions share a gateway
        for client in (first, second):
            [message] = await client.wait("message")
            assert message["data"] == "to both"
        session = next(f for f in first.frames if f["type"] == "welcome")["session"]
        await api(fleet, "send", {"user": "dana", "session": session, "data_b64": "AAE="})
        [_, binary] = await first.wait("message", 2)
        assert binary["data_b64"] == "AAE="
        status, _ = await api(fleet, "subscribe", {"user": "dana", "channel": "feed:private"})
        assert status == 200
        for client in (first, second):
            [granted] = await client.wait("subscribed", channel="feed:private")
            assert granted["server"] is True and "id" not in granted
        await api(fleet, "publish", {"channel": "feed:private", "data": "for dana"})
        for client in (first, second):
            [pub] = await client.wait("pub", channel="feed:private")
            assert pub["data"] == "for dana"
        await api(fleet, "unsubscribe", {"user": "dana", "channel": "feed:private"})
        [left] = await first.wait("unsubscribed", channel="feed:private")
        assert left["reason"] == "server"
        status, body = await api(
            fleet, "disconnect", {"user": "dana", "session": session, "code": 4001, "reason": "bye"}
        )
        await until(lambda: first.close_code is not None, 20, "the session closed")
        assert first.close_code == 4001 and second.close_code is None
        assert other.of("message") == [] and other.close_code is None
        assert (await api(fleet, "send", {"user": "nobody", "data": "x"}))[1]["gateways"] == 0


async def test_client_requests_obey_namespaces_tokens_and_limits(fleet: LocalFleet) -> None:
    async with unlimited_session() as http:
        client = await V1Client.connect(fleet, http, "fay", {"channels": ["feed:ok*"]})
        refusals = {
            ("subscribe", "feed:secret"): "permission_denied",
            ("subscribe", "ghost:x"): "unknown_namespace",
            ("subscribe", "has space"): "bad_channel",
            ("publish", "chat:room"): "not_subscribed",
            ("presence", "chat:room"): "not_subscribed",
            ("unsubscribe", "chat:room"): "not_subscribed",
        }
        for (kind, channel), code in refusals.items():
            answer = await client.request(kind, channel, data="x")
            assert (answer["type"], answer["code"]) == ("error", code), answer
        for channel in ("feed:ok1", "chat:a", "chat:b"):
            assert (await client.request("subscribe", channel))["type"] == "subscribed"
        assert (await client.request("subscribe", "chat:a"))["code"] == "already_subscribed"
        assert (await client.request("subscribe", "chat:c"))["code"] == "too_many_subscriptions"
        denied = await client.request("publish", "feed:ok1", data="x")
        assert denied["code"] == "permission_denied"  # feed: clients may not publish
        big = await client.request("publish", "chat:a", data="x" * 70_000)
        assert big["code"] == "too_big"
        ok = await client.request("publish", "chat:a", data="hi")  # the backend approves
        assert ok["type"] == "reply" and ok["result"]["offset"] == 1
        [pub] = await client.wait("pub", channel="chat:a")
        assert pub["info"] == {"user": "fay"} and pub["data"] == "hi"
        presence = await client.request("presence", "chat:a")
        assert [c["user"] for c in presence["result"]["clients"]] == ["fay"]
        assert client.close_code is None  # refusals are answers, not closes


async def test_a_backend_subscribes_a_session_and_publishes(fleet: LocalFleet) -> None:
    async with unlimited_session() as http:
        client = await V1Client.connect(fleet, http, "gus")
        await client.ws.send_str(json.dumps({"type": "message", "data": "/subscribe feed:backend"}))
        [granted] = await client.wait("subscribed", channel="feed:backend")
        assert granted["server"] is True
        await client.ws.send_str(
            json.dumps({"type": "message", "data": "/publish feed:backend hey"})
        )
        [pub] = await client.wait("pub", channel="feed:backend")
        assert pub["data"] == "hey"


async def test_presence_lists_subscribers_across_gateways_and_announces_joins(
    fleet: LocalFleet,
) -> None:
    async with unlimited_session() as http:
        clients = await _on_both_gateways(fleet, http, "member", {})
        watcher, *others = clients
        await watcher.request("subscribe", "chat:hall")
        for client in others:
            await client.request("subscribe", "chat:hall")
        await watcher.wait("join", len(others), channel="chat:hall")
        status, body = await api(fleet, "presence_stats", {"channel": "chat:hall"})
        assert (status, body) == (200, {"clients": len(clients), "users": len(clients)})
        _, listing = await api(fleet, "presence", {"channel": "chat:hall"})
        assert sorted(c["user"] for c in listing["clients"]) == sorted(
            f"member-{n}" for n in range(len(clients))
        )
        by_user = {c["user"]: c for c in listing["clients"]}
        for n, client in enumerate(clients):  # who, which session, over what, on which gateway
            entry = by_user[f"member-{n}"]
            assert (entry["pod"], entry["transport"]) == (client.pod, "websocket")
            assert entry["session"] == client.of("welcome")[0]["session"]
        await others[0].request("unsubscribe", "chat:hall")
        [leave] = await watcher.wait("leave", channel="chat:hall")
        assert leave["info"]["user"] == "member-1"


async def test_a_resubscribe_after_missing_publications_recovers_exactly_those(
    fleet: LocalFleet,
) -> None:
    async with unlimited_session() as http:
        claims = {"channels": ["feed:*"]}
        client = await V1Client.connect(fleet, http, "hana", claims)
        first = await client.request("subscribe", "feed:log")
        for n in range(3):
            await api(fleet, "publish", {"channel": "feed:log", "data": f"before-{n}"})
        pubs = await client.wait("pub", 3)
        await client.close()
        for n in range(4):
            await api(fleet, "publish", {"channel": "feed:log", "data": f"missed-{n}"})
        again = await V1Client.connect(fleet, http, "hana", claims)
        since = {"offset": pubs[-1]["offset"], "epoch": first["epoch"]}
        answer = await again.request("subscribe", "feed:log", since=since)
        assert (answer["recovered"], answer["missed"]) == (True, 4)
        await api(fleet, "publish", {"channel": "feed:log", "data": "live"})
        got = await again.wait("pub", 5)
        assert [p["data"] for p in got] == [*(f"missed-{n}" for n in range(4)), "live"]
        stale = await again.request(
            "subscribe", "feed:other", since={"offset": 3, "epoch": "not-it"}
        )
        assert stale["recovered"] is False  # never a silent gap
        _status, history = await api(fleet, "history", {"channel": "feed:log", "limit": 2})
        assert [p["data"] for p in history["publications"]] == ["missed-3", "live"]


async def test_presence_of_a_killed_gateway_goes_away_within_its_ttl(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=2, api_instances=1, sidecar_args=("--presence-ttl", "3")
    )
    async with unlimited_session() as http:
        clients = await _on_both_gateways(fleet, http, "ghost", {})
        for client in clients:
            await client.request("subscribe", "chat:ttl")
        victim = clients[0].pod
        survivors = sorted(f"ghost-{n}" for n, client in enumerate(clients) if client.pod != victim)
        await fleet.stop_sidecar(victim, sig=9)

        async def only_survivors() -> bool:
            _, listing = await api(fleet, "presence", {"channel": "chat:ttl"})
            return sorted(c["user"] for c in listing["clients"]) == survivors

        waited = await until(only_survivors, 30, "the killed gateway's presence gone")
        print(f"the killed gateway's presence was gone {waited:.1f} s after the kill (TTL 3 s)")


async def test_any_instance_takes_any_call_and_a_killed_one_costs_no_call(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1, api_instances=2)
    async with unlimited_session() as http:
        reader = await V1Client.connect(fleet, http, "ivy", {"channels": ["feed:*"]})
        await reader.request("subscribe", "feed:spof")
        for n in range(10):
            assert (await api(fleet, "publish", {"channel": "feed:spof", "data": f"a{n}"}))[
                0
            ] == 200
        served = {name: await _calls(port) for name, (_, port) in fleet.info.apis.items()}
        assert all(count > 0 for count in served.values()), served  # both took calls
        await fleet.stop_api("api-1", sig=9)
        for n in range(30):
            status, body = await api(fleet, "publish", {"channel": "feed:spof", "data": f"b{n}"})
            assert status == 200, body
        pubs = await reader.wait("pub", 40)
        assert [p["data"] for p in pubs] == [f"a{n}" for n in range(10)] + [
            f"b{n}" for n in range(30)
        ]


async def _calls(admin_port: int) -> float:
    total = 0.0
    for line in await _metrics(admin_port):
        if line.startswith("wsfleet_api_calls_total{"):
            total += float(line.split()[-1])
    return total
