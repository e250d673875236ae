"""The Python SDK's channels: subscriptions keep their position (epoch + offset), recover
what a reconnect or a gap missed, and answer publish and presence; channel frames never
reach the message iterator.

The client runs its real reconnect loop against a fake gateway: each connect gets a
:class:`FakeLink` the test feeds frames into and reads the client's frames from. No
process, no socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wsfleet_client import Backoff, ChannelError, Publication, Subscription, channels
from wsfleet_client.client import Client
from wsfleet_client.transports import OPENERS

Frame = dict[str, Any]
WAIT_S = 2.0  # how long an expected event may take before the test fails


class FakeLink:
    """One connection as the gateway's side sees it: the test feeds it frames and reads
    what the client sent."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.sent: asyncio.Queue[Frame] = asyncio.Queue()
        self._incoming: asyncio.Queue[Frame] = asyncio.Queue()
        self._idle = asyncio.Event()  # the client asks for the next frame: it handled the last

    async def frames(self) -> AsyncIterator[Frame]:
        while True:
            if self._incoming.empty():
                self._idle.set()
            frame = await self._incoming.get()
            yield frame
            if frame.get("type") == "close":
                return

    async def send(self, frame: Frame) -> None:
        self.sent.put_nowait(frame)

    async def close(self) -> None:
        pass

    async def feed(self, *frames: Frame) -> None:
        """Give the client these frames; return once it has handled every one."""
        self._idle.clear()
        for frame in frames:
            self._incoming.put_nowait(frame)
        await asyncio.wait_for(self._idle.wait(), WAIT_S)

    def drop(self) -> None:
        """The link ends (the client reconnects)."""
        self._incoming.put_nowait({"type": "close", "code": 1006, "reason": "link lost"})

    async def next_sent(self) -> Frame:
        return await asyncio.wait_for(self.sent.get(), WAIT_S)

    def all_sent(self) -> list[Frame]:
        frames = []
        while not self.sent.empty():
            frames.append(self.sent.get_nowait())
        return frames


class FakeGateway:
    """Opens a new :class:`FakeLink` for each connect of the client."""

    def __init__(self) -> None:
        self.links: asyncio.Queue[FakeLink] = asyncio.Queue()
        self.opened = 0

    async def open(self, http: object, base: str, params: dict[str, str], token: str) -> FakeLink:
        self.opened += 1
        link = FakeLink(f"pod-{self.opened}")
        self.links.put_nowait(link)
        return link

    async def next_link(self) -> FakeLink:
        return await asyncio.wait_for(self.links.get(), WAIT_S)

    async def connect(self, resumed: bool = False) -> FakeLink:
        """The client's next link, welcomed."""
        link = await self.next_link()
        await link.feed(welcome(resumed))
        return link


def welcome(resumed: bool = False) -> Frame:
    return {"type": "welcome", "session": "s1", "seq": 0, "cseq": 0, "resumed": resumed}


def subscribed(
    request_id: int | None,
    channel: str = "chat:1",
    offset: int = 0,
    epoch: str = "e1",
    recoverable: bool = True,
    recovered: bool = False,
) -> Frame:
    frame: Frame = {"type": "subscribed", "channel": channel, "epoch": epoch, "offset": offset}
    frame.update(recoverable=recoverable, recovered=recovered, missed=0)
    if request_id is None:
        frame["server"] = True
    else:
        frame["id"] = request_id
    return frame


def pub(offset: int, data: str = "", channel: str = "chat:1") -> Frame:
    return {"type": "pub", "channel": channel, "offset": offset, "data": data or f"p{offset}"}


async def take(sub: Subscription, count: int) -> list[Publication]:
    """The next ``count`` publications of ``sub``."""
    iterator = aiter(sub)
    return [await asyncio.wait_for(anext(iterator), WAIT_S) for _ in range(count)]


async def rest(sub: Subscription) -> list[Publication]:
    """Every publication left, once the subscription has ended."""

    async def read() -> list[Publication]:
        return [publication async for publication in sub]

    return await asyncio.wait_for(read(), WAIT_S)


async def offsets(sub: Subscription, count: int) -> list[int]:
    return [publication.offset for publication in await take(sub, count)]


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()
    monkeypatch.setitem(OPENERS, "websocket", fake.open)
    return fake


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Client]]:
    """Start a client (closed after the test) against the fake gateway."""
    started: list[Client] = []

    def make(**options: Any) -> Client:
        client = Client(
            "ws://gateway.test/ws",
            "alice",
            "token",
            backoff=Backoff(base_s=0.001, cap_s=0.001),
            transports=("websocket",),
            **options,
        )
        client.start()
        started.append(client)
        return client

    yield make
    for client in started:
        await client.close()


async def live(
    gateway: FakeGateway, start: Callable[..., Client], offset: int = 17
) -> tuple[Client, FakeLink, Subscription]:
    """A connected client subscribed to chat:1 (request id 1) at ``offset`` in epoch e1."""
    client = start()
    sub = client.subscribe("chat:1")
    link = await gateway.connect()
    assert await link.next_sent() == {"type": "subscribe", "id": 1, "channel": "chat:1"}
    await link.feed(subscribed(1, offset=offset))
    return client, link, sub


async def reply_to_next(
    link: FakeLink, answer: Callable[[int], Frame], request: Awaitable[Any]
) -> tuple[Frame, Any]:
    """Run ``request``, answer the frame it sends with ``answer(its id)``; both."""
    task = asyncio.ensure_future(request)
    frame = await link.next_sent()
    await link.feed(answer(frame["id"]))
    return frame, await asyncio.wait_for(task, WAIT_S)


# -- subscribing ------------------------------------------------------------------------


async def test_a_subscribe_made_before_connecting_is_sent_after_the_welcome(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    sub = client.subscribe("chat:1")
    link = await gateway.next_link()
    assert link.sent.empty()
    await link.feed(welcome())
    assert link.all_sent() == [{"type": "subscribe", "id": 1, "channel": "chat:1"}]
    assert not sub.subscribed.is_set()
    assert client.subscriptions == {"chat:1": sub}


async def test_subscribing_while_connected_sends_at_once_with_one_increasing_id(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    link = await gateway.connect()
    client.subscribe("chat:1")
    client.subscribe("chat:2")
    assert await link.next_sent() == {"type": "subscribe", "id": 1, "channel": "chat:1"}
    assert await link.next_sent() == {"type": "subscribe", "id": 2, "channel": "chat:2"}


async def test_subscribing_again_to_a_followed_channel_returns_the_same_subscription(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    assert client.subscribe("chat:1") is client.subscribe("chat:1")
    link = await gateway.connect()
    assert link.all_sent() == [{"type": "subscribe", "id": 1, "channel": "chat:1"}]


async def test_subscribed_sets_the_position_the_event_and_calls_on_subscribed(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    sub = client.subscribe("chat:1")
    answers: list[bool] = []
    sub.on_subscribed = answers.append
    link = await gateway.connect()
    await link.feed(subscribed(1, offset=17, epoch="9f2c"))
    assert (sub.epoch, sub.offset, sub.recoverable) == ("9f2c", 17, True)
    assert sub.subscribed.is_set()
    assert answers == [False]
    assert not sub.server


# -- publications -----------------------------------------------------------------------


async def test_contiguous_publications_are_delivered_in_order_with_their_data_and_info(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start, offset=17)
    binary = {"type": "pub", "channel": "chat:1", "offset": 19, "data_b64": "AAE="}
    binary["info"] = {"user": "bob"}
    await link.feed(pub(18, "hi"), binary)
    assert await take(sub, 2) == [
        Publication("chat:1", 18, "hi", None),
        Publication("chat:1", 19, b"\x00\x01", {"user": "bob"}),
    ]
    assert sub.offset == 19


async def test_a_publication_at_or_before_the_position_is_a_duplicate_and_dropped(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start, offset=17)
    await link.feed(pub(18), pub(18), pub(17), pub(19))
    assert await offsets(sub, 2) == [18, 19]
    assert sub.stats.duplicates == 2
    assert link.sent.empty()  # no resubscribe for a duplicate


async def test_a_gap_leaves_and_subscribes_again_from_the_last_offset(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start, offset=17)
    await link.feed(pub(18), pub(20))
    assert link.all_sent() == [
        {"type": "unsubscribe", "id": 2, "channel": "chat:1"},
        {"type": "subscribe", "id": 3, "channel": "chat:1", "since": {"offset": 18, "epoch": "e1"}},
    ]
    assert not sub.subscribed.is_set()
    # until the answer, the channel's publications are dropped: the answer says where to go on
    await link.feed(
        pub(21), {"type": "unsubscribed", "id": 2, "channel": "chat:1", "reason": "client"}
    )
    await link.feed(subscribed(3, offset=18, recovered=True), pub(19), pub(20), pub(21))
    assert await offsets(sub, 4) == [18, 19, 20, 21]
    assert (sub.stats.gaps, sub.stats.ignored, sub.stats.recovered) == (1, 1, 1)


async def test_publications_of_a_channel_without_history_all_pass(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    sub = client.subscribe("news")
    link = await gateway.connect()
    await link.feed(subscribed(1, "news", recoverable=False, epoch=""))
    await link.feed(pub(0, "a", "news"), pub(0, "b", "news"))
    assert [p.data for p in await take(sub, 2)] == ["a", "b"]
    assert (sub.stats.duplicates, sub.stats.gaps) == (0, 0)


async def test_a_full_queue_drops_the_oldest_publication(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    sub = client.subscribe("chat:1", maxsize=2)
    link = await gateway.connect()
    await link.feed(subscribed(1, offset=0), pub(1), pub(2), pub(3), pub(4))
    assert await offsets(sub, 2) == [3, 4]
    assert sub.stats.dropped == 2
    assert sub.offset == 4  # the position is what arrived, not what the app read


# -- reconnects and the server's side -----------------------------------------------------


async def test_a_reconnect_subscribes_again_from_the_position_and_drops_early_publications(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start, offset=5)
    await link.feed(pub(6))
    link.drop()
    second = await gateway.next_link()
    assert not sub.subscribed.is_set()
    await second.feed(welcome(resumed=True))
    assert second.all_sent() == [
        {"type": "subscribe", "id": 2, "channel": "chat:1", "since": {"offset": 6, "epoch": "e1"}}
    ]
    await second.feed(pub(9), subscribed(2, offset=6, recovered=True), pub(7), pub(8))
    assert await offsets(sub, 3) == [6, 7, 8]
    assert (sub.stats.resubscribes, sub.stats.recovered, sub.stats.ignored) == (1, 1, 1)


async def test_a_reconnect_subscribes_a_channel_without_history_again_without_since(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    client.subscribe("news")
    link = await gateway.connect()
    await link.feed(subscribed(1, "news", recoverable=False))
    link.all_sent()
    link.drop()
    second = await gateway.connect()
    assert second.all_sent() == [{"type": "subscribe", "id": 2, "channel": "news"}]


async def test_a_server_side_subscription_makes_a_subscription_and_tells_the_app(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    told: list[Subscription] = []
    client = start(on_subscription=told.append)
    link = await gateway.connect()
    await link.feed(subscribed(None, "alerts", offset=3), pub(4, channel="alerts"))
    [sub] = told
    assert client.subscriptions == {"alerts": sub}
    assert (sub.server, sub.channel, sub.offset, sub.epoch) == (True, "alerts", 4, "e1")
    assert sub.subscribed.is_set()
    assert await offsets(sub, 1) == [4]
    # after a reconnect the client subscribes it again itself, to recover what it missed
    link.drop()
    second = await gateway.connect(resumed=True)
    assert second.all_sent() == [
        {"type": "subscribe", "id": 1, "channel": "alerts", "since": {"offset": 4, "epoch": "e1"}}
    ]
    assert told == [sub]


async def test_a_server_subscribed_frame_for_a_pending_subscribe_makes_it_live(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    """After a reconnect the gateway may subscribe the session (token subs) before it reads
    our subscribe: ours is then refused with already_subscribed, which changes nothing."""
    client = start()
    sub = client.subscribe("chat:1")
    link = await gateway.connect()
    link.all_sent()
    await link.feed(subscribed(None, offset=30))
    await link.feed({"type": "error", "id": 1, "code": "already_subscribed", "message": "x"})
    assert sub.subscribed.is_set() and sub.offset == 30 and not sub.server
    assert link.sent.empty()
    assert sub.stats.retries == 0


async def test_insufficient_state_subscribes_again_from_the_position(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start, offset=17)
    await link.feed(pub(18))
    await link.feed({"type": "unsubscribed", "channel": "chat:1", "reason": "insufficient_state"})
    assert link.all_sent() == [
        {"type": "subscribe", "id": 2, "channel": "chat:1", "since": {"offset": 18, "epoch": "e1"}}
    ]
    await link.feed(subscribed(2, offset=40, recovered=False), pub(41))
    assert await offsets(sub, 2) == [18, 41]
    assert sub.stats.not_recovered == 1


async def test_unsubscribed_by_the_server_ends_the_iteration_and_the_tracking(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client, link, sub = await live(gateway, start, offset=1)
    await link.feed(pub(2), {"type": "unsubscribed", "channel": "chat:1", "reason": "server"})
    received = [p.offset for p in await rest(sub)]
    assert received == [2]
    assert sub.ended and sub.error is None and client.subscriptions == {}
    link.drop()
    second = await gateway.connect()
    assert second.sent.empty()  # not subscribed again


async def test_unsubscribe_sends_unsubscribe_and_ends_the_iteration(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client, link, sub = await live(gateway, start)
    await sub.unsubscribe()
    assert link.all_sent() == [{"type": "unsubscribe", "id": 2, "channel": "chat:1"}]
    assert await rest(sub) == []
    assert client.subscriptions == {}
    await link.feed(pub(18))  # still in flight: nobody takes it
    assert client.subscribe("chat:1") is not sub


async def test_permission_denied_ends_the_subscription_with_the_error(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client = start()
    sub = client.subscribe("secret:1")
    link = await gateway.connect()
    await link.feed({"type": "error", "id": 1, "code": "permission_denied", "message": "no"})
    assert sub.error is not None and sub.error.code == "permission_denied"
    with pytest.raises(ChannelError) as raised:
        await take(sub, 1)
    assert raised.value.code == "permission_denied"
    assert client.subscriptions == {}


async def test_a_subscribe_refused_as_unavailable_is_tried_again_shortly(
    gateway: FakeGateway, start: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channels, "RETRY_FIRST_S", 0.001)
    client = start()
    sub = client.subscribe("chat:1")
    link = await gateway.connect()
    link.all_sent()
    await link.feed({"type": "error", "id": 1, "code": "unavailable", "message": "redis"})
    assert await link.next_sent() == {"type": "subscribe", "id": 2, "channel": "chat:1"}
    await link.feed(subscribed(2, offset=3))
    assert sub.subscribed.is_set() and sub.stats.retries == 1 and not sub.ended


def test_the_retry_delay_grows_and_stays_bounded() -> None:
    delays = [channels.retry_delay(attempt) for attempt in range(12)]
    assert 0.125 <= delays[0] <= 0.25
    assert all(channels.RETRY_MAX_S / 2 <= delay <= channels.RETRY_MAX_S for delay in delays[6:])


# -- requests -----------------------------------------------------------------------------


async def test_publish_returns_the_offset_and_epoch_of_its_reply(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start)

    def ok(request_id: int) -> Frame:
        return {"type": "reply", "id": request_id, "result": {"offset": 19, "epoch": "e1"}}

    frame, result = await reply_to_next(link, ok, sub.publish("hi"))
    assert frame == {"type": "publish", "id": 2, "channel": "chat:1", "data": "hi"}
    assert result == (19, "e1")
    frame, _ = await reply_to_next(link, ok, sub.publish(b"\x00\x01"))
    assert frame == {"type": "publish", "id": 3, "channel": "chat:1", "data_b64": "AAE="}


async def test_a_refused_publish_raises_channel_error_with_its_code(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start)

    def refused(request_id: int) -> Frame:
        return {"type": "error", "id": request_id, "code": "too_big", "message": "too big"}

    with pytest.raises(ChannelError) as raised:
        await reply_to_next(link, refused, sub.publish("x" * 100))
    assert (raised.value.code, raised.value.message) == ("too_big", "too big")
    assert sub.subscribed.is_set()  # a refused request changes nothing else


async def test_presence_returns_the_clients_of_its_reply(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start)
    clients = [{"user": "alice", "session": "s1", "transport": "websocket"}]

    def answer(request_id: int) -> Frame:
        return {"type": "reply", "id": request_id, "result": {"clients": clients}}

    frame, result = await reply_to_next(link, answer, sub.presence())
    assert frame == {"type": "presence", "id": 2, "channel": "chat:1"}
    assert result == clients


async def test_a_publish_awaiting_its_reply_fails_when_the_link_drops_and_is_not_resent(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start)
    publishing = asyncio.ensure_future(sub.publish("once"))
    assert (await link.next_sent())["type"] == "publish"
    link.drop()
    with pytest.raises(ChannelError) as raised:
        await asyncio.wait_for(publishing, WAIT_S)
    assert raised.value.code == "disconnected"
    second = await gateway.connect(resumed=True)
    assert [frame["type"] for frame in second.all_sent()] == ["subscribe"]


async def test_a_publish_while_disconnected_fails_at_once(start: Callable[..., Client]) -> None:
    client = start()
    sub = client.subscribe("chat:1")
    with pytest.raises(ChannelError) as raised:
        await sub.publish("hi")
    assert raised.value.code == "disconnected"


# -- presence changes, the message inbox, closing ----------------------------------------


async def test_join_and_leave_call_the_subscription_callbacks(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    _, link, sub = await live(gateway, start)
    changes: list[tuple[str, dict[str, Any]]] = []
    sub.on_join = lambda info: changes.append(("join", info))
    sub.on_leave = lambda info: changes.append(("leave", info))
    bob = {"user": "bob", "session": "s9"}
    await link.feed(
        {"type": "join", "channel": "chat:1", "info": bob},
        {"type": "leave", "channel": "chat:1", "info": bob},
    )
    assert changes == [("join", bob), ("leave", bob)]


async def test_channel_frames_never_reach_the_message_inbox(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client, link, _ = await live(gateway, start)
    await link.feed(
        pub(18),
        {"type": "join", "channel": "chat:1", "info": {"user": "bob"}},
        {"type": "leave", "channel": "chat:1", "info": {"user": "bob"}},
        {"type": "reply", "id": 99, "result": {}},
        {"type": "error", "id": 98, "code": "not_subscribed", "message": ""},
        {"type": "unsubscribed", "channel": "other", "reason": "server"},
        subscribed(None, "alerts"),
        {"type": "message", "seq": 1, "data": "the only message"},
    )
    first = await asyncio.wait_for(anext(aiter(client)), WAIT_S)
    assert (first.seq, first.data) == (1, "the only message")


async def test_closing_the_client_ends_every_subscription(
    gateway: FakeGateway, start: Callable[..., Client]
) -> None:
    client, _, sub = await live(gateway, start)
    await client.close()
    assert await rest(sub) == []
    assert sub.ended and client.subscriptions == {}
