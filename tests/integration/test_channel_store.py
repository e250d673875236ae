"""One contract, three channel stores: memory (unit tests), one Redis and a 3-master Redis
Cluster. Offsets, epochs, bounded history, what reaches a channel's topic, presence with
expiry by the store's own clock, and commands routed to the gateways holding a user."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import RedisProcess
from tests.helpers import until
from wsfleet.channels.memory_store import MemoryChannelStore
from wsfleet.channels.messages import Publication, read_topic_message
from wsfleet.channels.redis_store import RedisChannelStore
from wsfleet.channels.store import (
    NO_POSITION,
    ChannelStore,
    HistoryRequest,
    Position,
    PresenceUpdate,
    PublishRequest,
)
from wsfleet.redis_client import connect
from wsfleet.registry import ConnectionRecord, new_connection_id
from wsfleet.registry.redis_registry import RedisRegistry

pytestmark = pytest.mark.integration


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    store: ChannelStore
    kind: str
    clock: Clock | None = None  # memory: time moves when the test says
    heard: dict[str, list[bytes]] = field(default_factory=dict)  # topic -> messages
    _listen: Callable[[str], Awaitable[None]] | None = None
    user_pods: dict[str, set[str]] = field(default_factory=dict)
    add_connection: Callable[[str, str], Awaitable[None]] | None = None

    async def listen(self, topic: str) -> list[bytes]:
        assert self._listen is not None
        await self._listen(topic)
        return self.heard.setdefault(topic, [])

    async def elapse(self, seconds: float, gone: Callable[[], Awaitable[bool]]) -> None:
        """Let ``seconds`` pass (memory: at once) and wait until ``gone()`` says so."""
        if self.clock is not None:
            self.clock.now += seconds
        await until(gone, 10 + seconds, "expiry")


PUBLISHED_AT = 1_700_000_000.123456


def _request(channel: str, data: bytes, size: int = 100, **extra: Any) -> PublishRequest:
    values: dict[str, Any] = {
        "channel": channel,
        "data": data,
        "binary": False,
        "info": b"",
        "history_size": size,
        "history_ttl_s": 300.0,
    }
    values.update(extra)
    return PublishRequest(**values)


def _read(channel: str, after: int | None = 0, limit: int = 100) -> HistoryRequest:
    return HistoryRequest(channel, after, limit, 300.0)


@pytest_asyncio.fixture(params=["memory", "redis", "redis-cluster"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = Clock()
        h = Harness(MemoryChannelStore(clock), "memory", clock)
        memory = h.store
        assert isinstance(memory, MemoryChannelStore)
        memory._pods_of_user = lambda user: h.user_pods.get(user, set())

        async def listen_memory(topic: str) -> None:
            memory.listeners.setdefault(topic, []).append(h.heard.setdefault(topic, []).append)

        async def add_memory(user: str, pod: str) -> None:
            h.user_pods.setdefault(user, set()).add(pod)

        h._listen, h.add_connection = listen_memory, add_memory
        yield h
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster_url")
    namespace = f"ch-{request.node.name}"
    store = RedisChannelStore(url, namespace)
    registry = RedisRegistry(url, namespace)
    h = Harness(store, request.param)
    pubsub = connect(url, 2).pubsub()
    reader: asyncio.Task[None] | None = None

    async def read() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                h.heard.setdefault(message["channel"].decode(), []).append(message["data"])

    async def listen_redis(topic: str) -> None:
        nonlocal reader
        await pubsub.subscribe(topic)
        if reader is None:
            reader = asyncio.create_task(read())

    async def add_redis(user: str, pod: str) -> None:
        record = ConnectionRecord(new_connection_id(user), user, pod, user, "websocket", 1.0)
        await registry.add_connections([record], 60, 0)

    h._listen, h.add_connection = listen_redis, add_redis
    yield h
    if reader is not None:
        reader.cancel()
    await pubsub.aclose()
    await registry.close()
    await store.close()


async def test_publications_get_offsets_in_one_epoch_and_history_returns_them_in_order(
    harness: Harness,
) -> None:
    store = harness.store
    positions = await store.publish(
        [_request("room", b"one"), _request("room", b"two"), _request("room", b"\x00", binary=True)]
    )
    assert all(isinstance(p, Position) for p in positions)
    epochs = {p.epoch for p in positions if isinstance(p, Position)}
    assert len(epochs) == 1 and "" not in epochs
    assert [p.offset for p in positions if isinstance(p, Position)] == [1, 2, 3]
    [history] = await store.history([_read("room", after=0)])
    assert not isinstance(history, Exception)
    assert history.position == positions[-1]
    assert [(p.offset, p.data, p.binary) for p in history.publications] == [
        (1, b"one", False),
        (2, b"two", False),
        (3, b"\x00", True),
    ]
    assert history.reaches_back_to(0)
    [rest] = await store.history([_read("room", after=2)])
    assert not isinstance(rest, Exception)
    assert [p.offset for p in rest.publications] == [3] and rest.reaches_back_to(2)


async def test_history_is_bounded_by_size_and_says_how_far_back_it_reaches(
    harness: Harness,
) -> None:
    for n in range(5):
        await harness.store.publish([_request("small", b"%d" % n, size=3)])
    [history] = await harness.store.history([_read("small", after=0)])
    assert not isinstance(history, Exception)
    assert [p.offset for p in history.publications] == [3, 4, 5]
    assert not history.reaches_back_to(0) and not history.reaches_back_to(1)
    assert history.reaches_back_to(2)


async def test_a_channel_read_before_its_first_publication_gets_an_epoch_that_stays(
    harness: Harness,
) -> None:
    [first] = await harness.store.history([_read("fresh", after=None)])
    [second] = await harness.store.history([_read("fresh", after=None)])
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    assert first.position.epoch and first.position == second.position == Position(
        first.position.epoch, 0
    )
    [published] = await harness.store.publish([_request("fresh", b"x")])
    assert published == Position(first.position.epoch, 1)


async def test_what_reaches_the_topic_is_what_history_keeps(harness: Harness) -> None:
    heard = await harness.listen(harness.store.topic("news"))
    info = json.dumps({"user": "alice"}, separators=(",", ":")).encode()
    request = _request("news", b"hello\nworld", info=info, published_at=PUBLISHED_AT)
    [position] = await harness.store.publish([request])
    await until(lambda: len(heard) == 1, 10, "the publication on the topic")
    live = read_topic_message("news", heard[0])
    [history] = await harness.store.history([_read("news", after=0)])
    assert not isinstance(history, Exception) and isinstance(position, Position)
    assert (
        live
        == history.publications[0]
        == Publication("news", 1, position.epoch, b"hello\nworld", False, info)
    )
    # the publish time travels on the topic only (to time deliveries), in microseconds
    assert live.published_at == pytest.approx(PUBLISHED_AT, abs=1e-6)
    assert history.publications[0].published_at == 0


async def test_a_channel_without_history_only_publishes(harness: Harness) -> None:
    heard = await harness.listen(harness.store.topic("live"))
    published_at = time.time()  # the publisher stamps it; the store carries it
    request = _request("live", b"now", size=0, published_at=published_at)
    assert await harness.store.publish([request]) == [NO_POSITION]
    await until(lambda: len(heard) == 1, 10, "the publication on the topic")
    live = read_topic_message("live", heard[0])
    assert live == Publication("live", 0, "", b"now", False)
    assert live.published_at == pytest.approx(published_at, abs=1e-6)


def _info(user: str, session: str) -> bytes:
    return json.dumps({"user": user, "session": session}).encode()


async def test_presence_lists_subscribers_counts_users_and_announces(harness: Harness) -> None:
    store = harness.store
    heard = await harness.listen(store.topic("lobby"))
    await store.update_presence(
        [
            PresenceUpdate("lobby", "s1", _info("alice", "s1"), True, announce=True),
            PresenceUpdate("lobby", "s2", _info("bob", "s2"), True),
            PresenceUpdate("lobby", "s3", _info("alice", "s3"), True),
        ],
        ttl_s=60,
    )
    assert sorted(await store.presence("lobby")) == sorted(
        [_info("alice", "s1"), _info("bob", "s2"), _info("alice", "s3")]
    )
    assert await store.presence_stats("lobby") == (3, 2)
    await store.update_presence(
        [PresenceUpdate("lobby", "s2", _info("bob", "s2"), False, announce=True)], ttl_s=60
    )
    assert await store.presence_stats("lobby") == (2, 1)
    await until(lambda: len(heard) == 2, 10, "a join and a leave")
    assert heard == [b"j" + _info("alice", "s1"), b"l" + _info("bob", "s2")]


async def test_presence_not_refreshed_within_its_ttl_is_gone(harness: Harness) -> None:
    store = harness.store
    await store.update_presence([PresenceUpdate("room", "s1", _info("a", "s1"), True)], 60)
    await store.update_presence([PresenceUpdate("room", "s2", _info("b", "s2"), True)], 0.3)

    async def only_s1_left() -> bool:
        return await store.presence("room") == [_info("a", "s1")]

    await harness.elapse(0.5, only_s1_left)
    assert await store.presence_stats("room") == (1, 1)


async def test_history_that_expired_keeps_the_epoch_and_says_it_does_not_reach_back(
    harness: Harness,
) -> None:
    store = harness.store
    [position] = await store.publish([_request("brief", b"x", history_ttl_s=0.3)])
    assert isinstance(position, Position)

    async def expired() -> bool:
        [history] = await store.history([_read("brief", after=0)])
        return not isinstance(history, Exception) and not history.publications

    await harness.elapse(0.5, expired)
    [history] = await store.history([_read("brief", after=0)])
    assert not isinstance(history, Exception)
    assert history.position == position and not history.reaches_back_to(0)


async def test_a_command_reaches_each_gateway_holding_the_user_once(harness: Harness) -> None:
    store = harness.store
    assert harness.add_connection is not None
    for pod in ("pod-a", "pod-a", "pod-b"):
        await harness.add_connection("carol", pod)
    heard_a = await harness.listen(store.command_topic("pod-a"))
    heard_b = await harness.listen(store.command_topic("pod-b"))
    heard_c = await harness.listen(store.command_topic("pod-c"))
    assert await store.command_user("carol", b"hello") == 2
    assert await store.command_user("nobody", b"hello") == 0
    await until(lambda: heard_a == [b"hello"] and heard_b == [b"hello"], 10, "commands")
    assert heard_c == []


async def test_a_stopped_redis_makes_every_call_of_a_batch_unavailable(
    redis_server: RedisProcess,
) -> None:
    store = RedisChannelStore(redis_server.url, "down")
    redis_server.stop()
    started = time.monotonic()
    results = await store.publish([_request("a", b"1"), _request("b", b"2")])
    assert [type(r).__name__ for r in results] == ["ChannelStoreUnavailable"] * 2
    assert time.monotonic() - started < 10
    await store.close()
