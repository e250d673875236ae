"""This gateway's channels: one pub/sub connection, one topic per channel with local
subscribers, and every publication handed to each of them as the same frames.

- **Joining** (:meth:`ChannelHub.join`): a session is registered for the channel's live
  publications first (they are kept for it meanwhile), the topic is subscribed (the first
  local subscriber only; the subscription confirmed before anything is read), then the
  channel's position and, with a ``since``, the history it missed are read (one batched
  round trip for every join of that turn). :func:`~sidecar.core.channel_feed.recover`
  decides what it gets; then it is a member.
- **Delivering**: the reader hands each publication to the channel's
  :class:`~sidecar.core.channel_feed.ChannelFeed` (offset order, gaps filled from the
  history) and queues what comes out; one delivery task writes each to every member, in
  the order queued, yielding to the event loop every :data:`DELIVERY_CHUNK` members so
  heartbeats never wait behind a big channel. The frames are made once per publication
  (:class:`~sidecar.core.channel_frames.PublicationFrames`). A member that joined with
  recovery skips what it already got from the history (its floor).
- **Leaving**: a channel with no local member keeps its topic for :data:`IDLE_S` (a
  session that leaves and comes back costs nothing) before it is unsubscribed.
- A lost pub/sub connection is made again, every topic subscribed again, and every feed
  checked against the store (what was published meanwhile is read from the history);
  feeds are also checked every ``check_s`` (a loss with nothing after it shows no gap).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from sidecar.channel_io import PresenceWriter
from sidecar.core.channel_feed import ChannelFeed, FeedStep, recover
from sidecar.core.channel_frames import (
    ChannelError,
    PublicationBatch,
    PublicationFrames,
    Refused,
    Since,
    presence_change,
    subscribed,
    unsubscribed,
)
from wsfleet.cancelling import cancel_and_wait
from wsfleet.channels.batched import BatchedCalls
from wsfleet.channels.messages import (
    BadMessage,
    Command,
    PresenceChange,
    read_command,
    read_topic_message,
)
from wsfleet.channels.namespaces import NamespaceOptions, Namespaces
from wsfleet.channels.store import (
    ChannelStoreUnavailable,
    History,
    HistoryRequest,
    Position,
)
from wsfleet.redis_client import ERRORS

log = structlog.get_logger()

DELIVERY_CHUNK = 256  # members written to between two yields to the event loop
MAX_QUEUED = 10_000  # publications waiting for delivery before the reader stops reading
DELIVER_TOGETHER = 64  # publications of one channel given out in one pass over its members
IDLE_S = 5.0  # a channel with no local member keeps its topic this long
CONFIRM_TIMEOUT_S = 5.0  # how long a join waits for its topic's subscription
PRESENCE_FLUSH_S = 1.0  # at stop, how long the last presence writes may take
RECONNECT_DELAY_S = (0.1, 2.0)  # the pub/sub connection's backoff: first, at most


class Subscriber(Protocol):
    """What the hub needs of a session."""

    user_id: str
    transport: str

    @property
    def session_id(self) -> str: ...

    @property
    def speaks_v1(self) -> bool:
        """Whether it gets channel frames (``subscribed``, ``join``…): raw WebSockets do not."""

    def publication(self, frames: PublicationFrames) -> None: ...

    def publications(self, batch: PublicationBatch) -> None: ...

    def channel_frame(self, frame: bytes) -> None: ...

    def channel_left(self, channel: str) -> None:
        """The session is no longer in ``channel`` (the hub took it out)."""


class LocalChannel:
    """One channel as this gateway holds it."""

    __slots__ = (
        "confirmed",
        "feed",
        "idle_since",
        "members",
        "name",
        "recovering",
        "topic",
    )

    def __init__(self, name: str, topic: str) -> None:
        self.name = name
        self.topic = topic
        # in join order; each with its floor: the last offset it got when it joined
        self.members: dict[Subscriber, int] = {}
        # sessions joining: what the feed gave out since they registered
        self.recovering: dict[Subscriber, list[PublicationFrames]] = {}
        self.feed = ChannelFeed()
        self.confirmed: asyncio.Future[None] | None = None  # the topic's SUBSCRIBE answered
        self.idle_since: float | None = None

    @property
    def empty(self) -> bool:
        return not self.members and not self.recovering


class HubCounters:
    """Plain integers, read at scrape time."""

    __slots__ = ("deliveries", "gaps_filled", "publications", "resets")

    def __init__(self) -> None:
        self.publications = self.deliveries = self.gaps_filled = self.resets = 0


class ChannelHub:
    def __init__(
        self,
        client: Any,  # the channel store's Redis client (redis-py, one server or a cluster)
        topic_of: Callable[[str], str],
        command_topic: str,
        reads: BatchedCalls[HistoryRequest, History],
        presence: PresenceWriter,
        namespaces: Callable[[], Namespaces | None],
        check_s: float,
        pod_id: str = "",
    ) -> None:
        self._client = client
        self._topic_of = topic_of
        self._command_topic = command_topic
        self._reads = reads
        self.presence = presence
        self._namespaces = namespaces
        self.on_command: Callable[[Command], None] = lambda command: None
        self._check_s = check_s
        self._pod_id = pod_id
        self.channels: dict[str, LocalChannel] = {}
        self._by_topic: dict[str, LocalChannel] = {}
        self._pubsub: Any = None
        self._to_subscribe: list[str] = []
        self._subscriber: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters = HubCounters()
        self.ready = asyncio.Event()  # the command topic is subscribed
        # each publication with the (monotonic) time it was read
        self._queue: collections.deque[tuple[LocalChannel, PublicationFrames, float]] = (
            collections.deque()
        )
        # per delivered batch: seconds since its oldest publication was read off the
        # topic, and since it was published (its publish time, by the publisher's clock;
        # the first figure when it carries none)
        self.on_delivered: Callable[[float, float], None] = lambda read_s, published_s: None
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read(), name="channel-reader"),
            asyncio.create_task(self._deliveries(), name="channel-deliveries"),
            asyncio.create_task(self._check_feeds(), name="channel-checks"),
            asyncio.create_task(self._sweep(), name="channel-sweep"),
            asyncio.create_task(self.presence.run(), name="presence-refresh"),
        ]

    async def stop(self) -> None:
        await self.presence.flush(PRESENCE_FLUSH_S)  # the closed sessions leave presence now
        await cancel_and_wait(*self._tasks)
        if self._subscriber is not None:
            self._subscriber.cancel()
        await self._close_pubsub()

    # -- namespaces -----------------------------------------------------------------

    def options(self, channel: str, request_id: int = 0) -> NamespaceOptions:
        """The channel's namespace options; :class:`Refused` when unknown."""
        namespaces = self._namespaces()
        if namespaces is None:
            raise Refused(
                ChannelError.UNAVAILABLE,
                "the channel namespaces are not known yet (no control plane?)",
                request_id,
            )
        options = namespaces.options_for(channel)
        if options is None:
            raise Refused(
                ChannelError.UNKNOWN_NAMESPACE,
                f"no namespace {channel.partition(':')[0]!r} in the policy",
                request_id,
            )
        return options

    # -- joining and leaving ----------------------------------------------------------

    def holds(self, session: Subscriber, channel: str) -> bool:
        local = self.channels.get(channel)
        return local is not None and (session in local.members or session in local.recovering)

    async def join(
        self,
        session: Subscriber,
        channel: str,
        options: NamespaceOptions,
        since: Since | None = None,
        request_id: int = 0,
    ) -> bool:
        """Make ``session`` a member (it is told, and gets what it missed); raises
        :class:`Refused` (``unavailable``) when the store cannot be reached. False when it
        left (or closed) before the join completed."""
        local = self.channels.get(channel)
        if local is None:
            local = self.channels[channel] = LocalChannel(channel, self._topic_of(channel))
            self._by_topic[local.topic] = local
        local.idle_since = None
        local.recovering[session] = []  # from now on, what the feed gives out is kept for it
        try:
            try:
                async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                    await self._confirmed(local)
            except TimeoutError:
                raise ChannelStoreUnavailable("the channel's topic is not subscribed") from None
            recoverable = options.recoverable
            if recoverable:
                after = since.offset if since is not None else None
                read = HistoryRequest(channel, after, options.history_size, options.history_ttl_s)
                history = await self._reads.call(read)
            else:
                history = History(Position("", 0), [])
        except ChannelStoreUnavailable as exc:
            self._forget(local, session)
            raise Refused(
                ChannelError.UNAVAILABLE, f"channels unavailable: {exc}"[:200], request_id
            ) from None
        arrived = local.recovering.pop(session, None)
        if arrived is None:
            return False  # it left meanwhile
        if recoverable:
            local.feed.adopt(history.position)
        by_publication = {id(frames.publication): frames for frames in arrived}
        result = recover(since, history, [frames.publication for frames in arrived], recoverable)
        if session.speaks_v1:
            session.channel_frame(
                subscribed(
                    request_id,
                    channel,
                    result.position.epoch,
                    result.position.offset,
                    recoverable,
                    result.recovered,
                    result.missed,
                )
            )
        floor = 0
        for publication in result.publications:
            frames = by_publication.get(id(publication)) or PublicationFrames(publication)
            session.publication(frames)
            floor = publication.offset
        local.members[session] = max(floor, result.position.offset)
        if options.presence:
            info = presence_info(session, self._pod_id)
            self.presence.join(channel, session.session_id, info, options.join_leave)
        return True

    def leave(self, session: Subscriber, channel: str, announce: bool) -> bool:
        """Take ``session`` out of ``channel``; whether it was in."""
        local = self.channels.get(channel)
        if local is None:
            return False
        was_in = self._forget(local, session)
        if was_in:
            self.presence.leave(channel, session.session_id, announce)
        return was_in

    def _forget(self, local: LocalChannel, session: Subscriber) -> bool:
        was_member = local.members.pop(session, None) is not None
        was_joining = local.recovering.pop(session, None) is not None
        if local.empty and local.idle_since is None:
            local.idle_since = time.monotonic()
        return was_member or was_joining

    # -- the topic subscriptions ----------------------------------------------------------

    async def _confirmed(self, local: LocalChannel) -> None:
        """Wait until the channel's topic is subscribed (the first join asks for it)."""
        if local.confirmed is None:
            local.confirmed = asyncio.get_running_loop().create_future()
            self._to_subscribe.append(local.topic)
            if self._subscriber is None or self._subscriber.done():
                self._subscriber = asyncio.create_task(self._subscribe_pending())
        await asyncio.shield(local.confirmed)

    async def _subscribe_pending(self) -> None:
        """SUBSCRIBE what this turn's joins asked for, in one command."""
        await self.ready.wait()
        while self._to_subscribe:
            await asyncio.sleep(0)
            topics, self._to_subscribe = self._to_subscribe, []
            pubsub = self._pubsub
            if pubsub is None:  # the reader makes the connection again, with every topic
                continue
            try:
                await pubsub.subscribe(*topics)
            except ERRORS as exc:
                log.warning("channel_subscribe_failed", error=str(exc)[:200])
                # the reader's reconnect subscribes every channel's topic again

    async def _read(self) -> None:
        delay = RECONNECT_DELAY_S[0]
        while True:
            try:
                self._pubsub = self._client.pubsub()
                topics = [self._command_topic, *(c.topic for c in self.channels.values())]
                await self._pubsub.subscribe(*topics)
                reconnected = self.ready.is_set()
                self.ready.set()
                if reconnected:
                    self._check_all_soon()
                delay = RECONNECT_DELAY_S[0]
                while True:
                    message = await self._pubsub.get_message(timeout=None)
                    if message is not None:
                        await self._handle(message)
            except asyncio.CancelledError:
                raise
            except ERRORS as exc:
                log.warning("channel_pubsub_lost", error=str(exc)[:200])
            await self._close_pubsub()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_S[1])

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        topic = _text(message.get("channel"))
        if kind == "subscribe":
            local = self._by_topic.get(topic)
            if local is not None and local.confirmed is not None and not local.confirmed.done():
                local.confirmed.set_result(None)
            return
        if kind == "unsubscribe" and topic in self._by_topic:
            # the sweep released this topic while a new join took the channel again (its
            # SUBSCRIBE went first): subscribe again; the feed fills what was missed
            self._to_subscribe.append(topic)
            if self._subscriber is None or self._subscriber.done():
                self._subscriber = asyncio.create_task(self._subscribe_pending())
            return
        if kind != "message":
            return
        data = message.get("data")
        if not isinstance(data, bytes):
            return
        if topic == self._command_topic:
            try:
                command = read_command(data)
            except BadMessage as exc:
                log.warning("bad_command", error=str(exc))
                return
            self.on_command(command)
            return
        local = self._by_topic.get(topic)
        if local is None:
            return
        try:
            received = read_topic_message(local.name, data)
        except BadMessage as exc:
            log.warning("bad_topic_message", channel=local.name, error=str(exc))
            return
        if isinstance(received, PresenceChange):
            frame = presence_change(local.name, received.joined, received.info)
            for member in list(local.members):
                if member.speaks_v1:
                    member.channel_frame(frame)
            return
        self.counters.publications += 1
        self._step(local, local.feed.live(received))
        if len(self._queue) >= MAX_QUEUED:  # delivery is behind: stop reading a while
            self._room.clear()
            await self._room.wait()

    def _step(self, local: LocalChannel, step: FeedStep) -> None:
        if step.fetch is not None:
            self._fetch(local, step.fetch.after)
        if step.reset:
            self._reset(local)
        for publication in step.deliver:
            self._queue.append((local, PublicationFrames(publication), time.monotonic()))
        if step.deliver:
            self._queued.set()

    async def _deliveries(self) -> None:
        """Write every queued publication to its channel's members, in the order queued;
        the publications of one channel queued together go out together (a member gets
        them in one socket write)."""
        queue = self._queue
        while True:
            await self._queued.wait()
            self._queued.clear()
            while queue:
                local, frames, read_at = queue.popleft()
                together = [frames]
                while queue and queue[0][0] is local and len(together) < DELIVER_TOGETHER:
                    together.append(queue.popleft()[1])
                await self._deliver(local, together)
                self._delivered(read_at, frames.publication.published_at)  # the batch's oldest
                if len(queue) < MAX_QUEUED // 2:
                    self._room.set()

    async def _deliver(self, local: LocalChannel, publications: list[PublicationFrames]) -> None:
        for buffer in local.recovering.values():
            buffer.extend(publications)
        members = list(local.members.items())
        self.counters.deliveries += len(members) * len(publications)
        batch = PublicationBatch(publications) if len(publications) > 1 else None
        first = publications[0].publication.offset
        for start in range(0, len(members), DELIVERY_CHUNK):
            if start:
                await asyncio.sleep(0)  # heartbeats and other channels go on
            chunk = members[start : start + DELIVERY_CHUNK]
            for member, floor in chunk:
                if first > floor or not first:  # it has none of them yet (the usual case)
                    if batch is None:
                        member.publication(publications[0])
                    else:
                        member.publications(batch)
                    continue
                for frames in publications:  # it got some from the history when it joined
                    offset = frames.publication.offset
                    if offset > floor or not offset:
                        member.publication(frames)

    def _delivered(self, read_at: float, published_at: float) -> None:
        since_read = time.monotonic() - read_at
        # another host's clock: skew shows (and a clock ahead of this one counts as 0)
        since_publish = max(0.0, time.time() - published_at) if published_at else since_read
        self.on_delivered(since_read, since_publish)

    def _reset(self, local: LocalChannel) -> None:
        """The feed lost its place: every member subscribes again (and learns it could not
        recover)."""
        self.counters.resets += 1
        frame = unsubscribed(0, local.name, "insufficient_state")
        for member in list(local.members):
            local.members.pop(member, None)
            self.presence.leave(local.name, member.session_id, announce=False)
            member.channel_left(local.name)
            if member.speaks_v1:
                member.channel_frame(frame)
        if local.empty and local.idle_since is None:
            local.idle_since = time.monotonic()

    # -- filling gaps and checking feeds ----------------------------------------------------

    def _fetch(self, local: LocalChannel, after: int) -> None:
        options = self.options_or_none(local.name)
        size = options.history_size if options else 0
        ttl = options.history_ttl_s if options else 300.0
        request = HistoryRequest(local.name, after, max(size, 1), ttl)

        def fetched(result: History | ChannelStoreUnavailable) -> None:
            history = None if isinstance(result, ChannelStoreUnavailable) else result
            step = local.feed.fetched(history)
            if step.deliver:
                self.counters.gaps_filled += 1
            self._step(local, step)

        self._reads.submit(request, fetched)

    def options_or_none(self, channel: str) -> NamespaceOptions | None:
        namespaces = self._namespaces()
        return namespaces.options_for(channel) if namespaces else None

    def _check_all_soon(self) -> None:
        for local in list(self.channels.values()):
            if local.members:
                fetch = local.feed.check()
                if fetch is not None:
                    self._fetch(local, fetch.after)

    async def _check_feeds(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            self._check_all_soon()

    async def _sweep(self) -> None:
        """Unsubscribe the topics of channels that stayed without local members."""
        while True:
            await asyncio.sleep(IDLE_S / 2)
            now = time.monotonic()
            idle = [
                local
                for local in self.channels.values()
                if local.empty and local.idle_since is not None and now - local.idle_since > IDLE_S
            ]
            if not idle:
                continue
            for local in idle:
                del self.channels[local.name]
                del self._by_topic[local.topic]
            pubsub = self._pubsub
            if pubsub is not None:
                with contextlib.suppress(*ERRORS):
                    await pubsub.unsubscribe(*(local.topic for local in idle))

    def subscriptions(self) -> int:
        return sum(len(local.members) for local in self.channels.values())


def presence_info(session: Subscriber, pod_id: str) -> bytes:
    """A presence entry: who, which session, over what, on which gateway."""
    entry = {
        "user": session.user_id,
        "session": session.session_id,
        "transport": session.transport,
        "pod": pod_id,
    }
    return json.dumps(entry, separators=(",", ":")).encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
