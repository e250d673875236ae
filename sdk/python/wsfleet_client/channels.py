"""Channels for the client (docs/channels.md): subscriptions, where each stands, and
recovery of what was missed.

:class:`Channels` keeps the protocol's bookkeeping: it reads the gateway's channel frames
(``subscribed``, ``pub``, ``unsubscribed``, ``join``, ``leave``, ``reply``, ``error``)
and writes requests through a ``send`` function the client gives it; it knows no link.
The client tells it when a link is up (after the ``welcome``) and when it is gone.

The rules:

- A subscription remembers its channel's **epoch** and the last **offset** it received.
  After a reconnect, every subscription (the app's and the server's) is subscribed again
  with ``since`` that position: the gateway sends what was missed (``recovered``) or says
  it cannot (the app reloads its state); never a silent gap.
- A ``pub`` of a recoverable channel must continue from the last one (``offset ==
  last + 1``): an older one is a duplicate (dropped); a newer one means publications were
  lost on the way, so the channel is left and subscribed again with ``since``. Until the
  answer (``subscribed``) its ``pub`` frames are dropped: the answer says where the next
  ones start. ``unsubscribed`` with reason ``insufficient_state`` does the same.
- A subscribe refused with ``unavailable`` (the store cannot be reached) is tried again
  after a short delay that grows with the retries, up to :data:`RETRY_MAX_S`; refused
  for any other reason (``permission_denied``, ``unknown_namespace``, ``bad_channel``,
  ``too_many_subscriptions``…) it ends: ``sub.error`` is set and iterating it raises the
  :class:`ChannelError`.
- ``publish`` and ``presence`` are sent only on a live link and never again after it
  drops (a publication must not go out twice): their answer then fails with
  ``ChannelError("disconnected")``.
- Everything is bounded: each subscription's queue of publications (the oldest go first
  when it is full, counted in ``stats.dropped``) and the requests awaiting an answer.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

Frame = dict[str, Any]
Send = Callable[[Frame], Awaitable[bool]]  # sends on the live link; False if it could not
Info = dict[str, Any]

CHANNEL_FRAMES = frozenset({"pub", "subscribed", "unsubscribed", "join", "leave", "reply", "error"})
DEFAULT_MAXSIZE = 10_000  # publications a subscription holds for the app, at most
MAX_PENDING_REQUESTS = 1000  # publish and presence requests awaiting an answer, at most
RETRY_FIRST_S = 0.25  # a subscribe refused with "unavailable" goes again after about this,
RETRY_MAX_S = 5.0  # ... doubling with each retry, up to this


class ChannelError(Exception):
    """A channel request refused by the gateway (the ``code`` and ``message`` of its
    ``error`` frame), or one that could not be answered: ``disconnected`` (the link
    dropped first), ``send_failed``, ``too_many_requests`` (too many await an answer)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Publication:
    """A publication in a channel: its offset (0 in a channel without history), its data
    (bytes when it was published as binary) and, when a client published it, ``info``."""

    channel: str
    offset: int
    data: str | bytes
    info: Info | None = None


@dataclass
class SubscriptionStats:
    """What happened to one subscription, for callers that measure (tests, benchmarks)."""

    subscribes: int = 0  # subscribe frames sent
    resubscribes: int = 0  # ... of them after it had been subscribed (reconnect, gap...)
    recovered: int = 0  # subscribes with a position the gateway filled in
    not_recovered: int = 0  # subscribes with a position it could not (the app reloads)
    gaps: int = 0  # publications that skipped offsets
    duplicates: int = 0  # publications at or before the position, dropped
    ignored: int = 0  # publications while (re)subscribing, dropped
    dropped: int = 0  # publications the full queue pushed out (the oldest)
    retries: int = 0  # subscribes tried again after "unavailable" or a failed send


class _Arrival(Enum):
    DELIVER = "deliver"
    DROP = "drop"
    GAP = "gap"


class Subscription:
    """One channel as this client follows it: where it stands (``epoch``, ``offset``) and
    its publications, read with ``async for publication in subscription``.

    Iteration ends after :meth:`unsubscribe`, after the server unsubscribed the session
    (reason ``server``) or when the client closes; it raises :attr:`error` (a
    :class:`ChannelError`) when the subscribe was refused for good or the client gave up.
    Publications received before the end are still yielded first.
    """

    def __init__(
        self, channels: Channels, channel: str, maxsize: int = DEFAULT_MAXSIZE, server: bool = False
    ) -> None:
        if maxsize < 1:
            raise ValueError("a subscription's queue holds at least one publication")
        self.channel = channel
        self.epoch = ""
        self.offset = 0  # the last offset received: a recovery asks for what came after it
        self.recoverable = False  # the channel has history (its publications have offsets)
        self.server = server  # the server subscribed the session (token subs, API, backend)
        self.subscribed = asyncio.Event()  # set while in the channel on the live link
        self.error: ChannelError | None = None
        self.stats = SubscriptionStats()
        self.on_join: Callable[[Info], None] | None = None
        self.on_leave: Callable[[Info], None] | None = None
        self.on_subscribed: Callable[[bool], None] | None = None  # (recovered)
        self._channels = channels
        self._maxsize = maxsize
        self._queue: collections.deque[Publication] = collections.deque()
        self._changed = asyncio.Event()  # a publication arrived, or the subscription ended
        self._ended = False
        self._request_id = 0  # the subscribe awaiting its answer
        self._asked_since = False  # ... sent with a position to recover from
        self._was_subscribed = False
        self._retries = 0  # subscribes retried since the last success (for the delay)
        self._retry: asyncio.TimerHandle | None = None

    @property
    def ended(self) -> bool:
        """No longer followed: not subscribed again after a reconnect."""
        return self._ended

    def __aiter__(self) -> AsyncIterator[Publication]:
        return self._publications()

    async def publish(self, data: str | bytes) -> tuple[int, str]:
        """Publish to the channel (the namespace must allow it, and the session be
        subscribed: ``await sub.subscribed.wait()`` first). Returns the publication's
        ``(offset, epoch)``; raises :class:`ChannelError`. Never sent twice."""
        if isinstance(data, bytes):
            body: Frame = {"data_b64": base64.b64encode(data).decode()}
        else:
            body = {"data": data}
        result = await self._channels.request("publish", self.channel, body)
        return int(result.get("offset", 0)), str(result.get("epoch", ""))

    async def presence(self) -> list[Info]:
        """Who is subscribed: ``[{"user", "session", "transport"}, ...]`` (the namespace
        keeps presence); raises :class:`ChannelError`."""
        result = await self._channels.request("presence", self.channel)
        clients = result.get("clients", [])
        return [client for client in clients if isinstance(client, dict)]

    async def unsubscribe(self) -> None:
        """Leave the channel and stop following it: iteration ends."""
        await self._channels.unsubscribe(self)

    # -- for Channels ------------------------------------------------------------------

    def _since(self) -> Frame | None:
        """The position to recover from, when the channel has one."""
        if self.recoverable and self.epoch:
            return {"offset": self.offset, "epoch": self.epoch}
        return None

    def _subscribing(self, request_id: int, asked_since: bool) -> None:
        self._cancel_retry()
        self.subscribed.clear()
        self._request_id = request_id
        self._asked_since = asked_since
        self.stats.subscribes += 1
        if self._was_subscribed:
            self.stats.resubscribes += 1

    def _accept(self, frame: Frame) -> None:
        """A ``subscribed`` frame: the position from which publications continue."""
        recovered = bool(frame.get("recovered"))
        if self._asked_since:
            if recovered:
                self.stats.recovered += 1
            else:
                self.stats.not_recovered += 1
        self.epoch = str(frame.get("epoch", ""))
        self.offset = _number(frame, "offset")
        self.recoverable = bool(frame.get("recoverable"))
        self._cancel_retry()
        self._request_id = 0
        self._asked_since = False
        self._retries = 0
        self._was_subscribed = True
        self.subscribed.set()
        if self.on_subscribed is not None:
            self.on_subscribed(recovered)

    def _arrival(self, offset: int) -> _Arrival:
        """What to do with a publication at ``offset``; advances the position."""
        if not self.subscribed.is_set():
            self.stats.ignored += 1
            return _Arrival.DROP
        if not self.recoverable:
            return _Arrival.DELIVER
        if offset <= self.offset:
            self.stats.duplicates += 1
            return _Arrival.DROP
        if offset > self.offset + 1:
            self.stats.gaps += 1
            return _Arrival.GAP
        self.offset = offset
        return _Arrival.DELIVER

    def _deliver(self, publication: Publication) -> None:
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.stats.dropped += 1
        self._queue.append(publication)
        self._changed.set()

    def _link_lost(self) -> None:
        """The link dropped: out of the channel until the next welcome subscribes again."""
        self._cancel_retry()
        self.subscribed.clear()
        self._request_id = 0
        self._asked_since = False

    def _end(self, error: ChannelError | None) -> None:
        self._link_lost()
        self._ended = True
        self.error = error
        self._changed.set()

    def _retry_in(self, delay_s: float, retry: Callable[[], None]) -> None:
        self._cancel_retry()
        self.subscribed.clear()
        self._retries += 1
        self.stats.retries += 1
        self._retry = asyncio.get_running_loop().call_later(delay_s, retry)

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def _publications(self) -> AsyncIterator[Publication]:
        while True:
            if self._queue:
                yield self._queue.popleft()
                continue
            if self._ended:
                if self.error is not None:
                    raise self.error
                return
            self._changed.clear()
            await self._changed.wait()


def retry_delay(attempt: int) -> float:
    """How long to wait before subscribing again after ``attempt`` retries: a window that
    doubles from :data:`RETRY_FIRST_S` up to :data:`RETRY_MAX_S`, the wait somewhere in
    its second half (subscriptions refused together do not come back together)."""
    window = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(attempt, 16))
    return window / 2 + random.uniform(0.0, window / 2)


class Channels:
    """The client's channels: its subscriptions (``subscriptions``, by channel, the app's
    and the server's), the requests awaiting an answer, and the request ids (one
    increasing counter)."""

    def __init__(
        self, send: Send, on_subscription: Callable[[Subscription], None] | None = None
    ) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.on_subscription = on_subscription
        self._send = send
        self._connected = False
        self._last_id = 0
        self._subscribes: dict[int, Subscription] = {}  # subscribe id -> its subscription
        self._requests: dict[int, asyncio.Future[Frame]] = {}  # publish, presence
        self._outbox: collections.deque[Frame] = collections.deque()
        self._sending = asyncio.Lock()  # frames leave one at a time, in order
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the app's side ----------------------------------------------------------------

    def subscribe(self, channel: str, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        """The subscription to ``channel`` (the one already followed, if any); its
        subscribe goes now if a link is up, else after the next welcome."""
        sub = self.subscriptions.get(channel)
        if sub is not None:
            return sub
        sub = Subscription(self, channel, maxsize)
        self.subscriptions[channel] = sub
        if self._connected:
            self._queue_subscribe(sub)
            self._flush_soon()
        return sub

    async def request(self, kind: str, channel: str, body: Frame | None = None) -> Frame:
        """Send a ``publish`` or ``presence`` request; its ``result``, or ChannelError."""
        if not self._connected:
            raise ChannelError("disconnected", f"not connected: a {kind} is not queued")
        if len(self._requests) >= MAX_PENDING_REQUESTS:
            message = f"{MAX_PENDING_REQUESTS} requests await an answer"
            raise ChannelError("too_many_requests", message)
        request_id = self._next_id()
        answer: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = answer
        self._outbox.append({"type": kind, "id": request_id, "channel": channel, **(body or {})})
        try:
            await self._flush()
            return await answer
        finally:
            self._requests.pop(request_id, None)

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stop following ``sub`` and leave its channel (an unsubscribe sent after a
        pending subscribe is answered after it)."""
        if sub.ended:
            return
        self._forget(sub, None)
        if self._connected:  # (if the gateway does not hold it, it says so: ignored)
            self._outbox.append(
                {"type": "unsubscribe", "id": self._next_id(), "channel": sub.channel}
            )
            await self._flush()

    # -- the link's side ---------------------------------------------------------------

    async def connected(self) -> None:
        """A link is up (its welcome came): subscribe every subscription again, each
        with its position when it has one."""
        self._connected = True
        for sub in list(self.subscriptions.values()):
            self._queue_subscribe(sub)
        await self._flush()

    def disconnected(self) -> None:
        """The link is gone: what awaited an answer on it fails (publications are not
        sent again); subscriptions wait for the next welcome."""
        self._connected = False
        self._outbox.clear()
        self._subscribes.clear()
        for sub in self.subscriptions.values():
            sub._link_lost()
        waiting, self._requests = self._requests, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(ChannelError("disconnected", "the link dropped first"))

    def close(self, error: ChannelError | None = None) -> None:
        """The client is done: every subscription ends (with ``error``, if given)."""
        self.disconnected()
        for sub in list(self.subscriptions.values()):
            self._forget(sub, error)
        for task in self._tasks:
            task.cancel()

    async def handle(self, frame: Frame) -> None:
        """A channel frame from the gateway (a type in :data:`CHANNEL_FRAMES`)."""
        kind = frame.get("type")
        if kind == "pub":
            self._on_pub(frame)
        elif kind == "subscribed":
            self._on_subscribed(frame)
        elif kind == "unsubscribed":
            self._on_unsubscribed(frame)
        elif kind in ("join", "leave"):
            self._on_presence_change(frame, joined=kind == "join")
        elif kind == "reply":
            self._answer(frame, None)
        elif kind == "error":
            self._on_error(frame)
        if self._outbox:
            await self._flush()

    # -- frames from the gateway -------------------------------------------------------

    def _on_pub(self, frame: Frame) -> None:
        sub = self.subscriptions.get(str(frame.get("channel", "")))
        if sub is None:
            return
        offset = _number(frame, "offset")
        arrival = sub._arrival(offset)
        if arrival is _Arrival.GAP:
            self._queue_subscribe(sub, leave_first=True)  # the gateway sends what we missed
        elif arrival is _Arrival.DELIVER:
            sub._deliver(Publication(sub.channel, offset, _data(frame), _info(frame)))

    def _on_subscribed(self, frame: Frame) -> None:
        channel = str(frame.get("channel", ""))
        if not frame.get("server"):
            sub = self._subscribes.pop(_number(frame, "id"), None)
            if sub is None:
                return  # an answer nobody waits for any more (unsubscribed, or lost)
        elif (known := self.subscriptions.get(channel)) is not None:
            sub = known  # ours already: our own subscribe meets already_subscribed
            self._subscribes.pop(sub._request_id, None)
        else:
            sub = self.subscriptions[channel] = Subscription(self, channel, server=True)
            if self.on_subscription is not None:
                self.on_subscription(sub)  # the app sets its callbacks (on_subscribed...) now
        sub._accept(frame)

    def _on_unsubscribed(self, frame: Frame) -> None:
        sub = self.subscriptions.get(str(frame.get("channel", "")))
        reason = frame.get("reason")
        if sub is None or reason == "client":
            return  # the answer to an unsubscribe of ours
        if reason == "insufficient_state":
            # the gateway lost its place in the channel: subscribe again with our position
            # (unless a subscribe is under way: its answer gives a fresh position)
            if not sub._request_id:
                self._queue_subscribe(sub)
            return
        self._forget(sub, None)  # "server": the server API or the backend took it out

    def _on_presence_change(self, frame: Frame, joined: bool) -> None:
        sub = self.subscriptions.get(str(frame.get("channel", "")))
        if sub is None:
            return
        callback = sub.on_join if joined else sub.on_leave
        if callback is not None:
            callback(_info(frame) or {})

    def _on_error(self, frame: Frame) -> None:
        code = str(frame.get("code", ""))
        error = ChannelError(code, str(frame.get("message", "")))
        if self._answer(frame, error):
            return
        sub = self._subscribes.pop(_number(frame, "id"), None)
        if sub is None:
            return  # the answer to an unsubscribe, or to nothing awaited any more
        sub._request_id = 0
        if code == "unavailable":
            self._retry_later(sub)  # the store cannot be reached now: try again shortly
        elif code == "already_subscribed":
            # the server subscribed the session itself (then its subscribed came first and
            # this is not reached) or the gateway kept the channel: leave it, subscribe again
            self._retry_later(sub, leave_first=True)
        else:  # permission_denied, unknown_namespace, bad_channel, too_many_subscriptions...
            self._forget(sub, error)

    def _answer(self, frame: Frame, error: ChannelError | None) -> bool:
        """Answer the publish or presence request with the frame's id; whether there was
        one."""
        answer = self._requests.pop(_number(frame, "id"), None)
        if answer is None:
            return False
        if not answer.done():
            if error is not None:
                answer.set_exception(error)
            else:
                result = frame.get("result")
                answer.set_result(result if isinstance(result, dict) else {})
        return True

    # -- requests to the gateway -------------------------------------------------------

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _queue_subscribe(self, sub: Subscription, leave_first: bool = False) -> None:
        """(Re)subscribe ``sub`` with its position when it has one; ``leave_first``: the
        gateway still holds the channel, leave it first."""
        self._subscribes.pop(sub._request_id, None)
        if leave_first:
            self._outbox.append(
                {"type": "unsubscribe", "id": self._next_id(), "channel": sub.channel}
            )
        frame: Frame = {"type": "subscribe", "id": self._next_id(), "channel": sub.channel}
        since = sub._since()
        if since is not None:
            frame["since"] = since
        sub._subscribing(frame["id"], since is not None)
        self._subscribes[frame["id"]] = sub
        self._outbox.append(frame)

    def _retry_later(self, sub: Subscription, leave_first: bool = False) -> None:
        """Subscribe ``sub`` again after a delay that grows with its retries (a reconnect
        meanwhile subscribes it at once instead)."""

        def retry() -> None:
            sub._retry = None
            followed = self.subscriptions.get(sub.channel) is sub
            if followed and self._connected and not sub._request_id:
                self._queue_subscribe(sub, leave_first)
                self._flush_soon()

        sub._retry_in(retry_delay(sub._retries), retry)

    def _forget(self, sub: Subscription, error: ChannelError | None) -> None:
        """Stop following ``sub``; its iteration ends (raising ``error``, if given)."""
        if self.subscriptions.get(sub.channel) is sub:
            del self.subscriptions[sub.channel]
        self._subscribes.pop(sub._request_id, None)
        sub._end(error)

    async def _flush(self) -> None:
        """Send what waits in the outbox, in order. A frame that cannot be sent fails its
        request, or has its subscribe tried again later."""
        async with self._sending:
            while self._outbox and self._connected:
                frame = self._outbox.popleft()
                if not await self._send(frame):
                    self._unsent(frame)

    def _flush_soon(self) -> None:
        """:meth:`_flush`, from code that cannot wait."""
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unsent(self, frame: Frame) -> None:
        request_id = _number(frame, "id")
        answer = self._requests.pop(request_id, None)
        if answer is not None and not answer.done():
            answer.set_exception(ChannelError("send_failed", f"the {frame['type']} was not sent"))
        sub = self._subscribes.pop(request_id, None)
        if sub is not None and frame["type"] == "subscribe":
            sub._request_id = 0
            self._retry_later(sub)


def _number(frame: Frame, key: str) -> int:
    """A frame's integer field (an offset, an id); 0 when it is missing or not one."""
    value = frame.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _data(frame: Frame) -> str | bytes:
    if "data_b64" in frame:
        return base64.b64decode(frame["data_b64"])
    return str(frame.get("data", ""))


def _info(frame: Frame) -> Info | None:
    info = frame.get("info")
    return info if isinstance(info, dict) else None


__all__ = [
    "CHANNEL_FRAMES",
    "ChannelError",
    "Channels",
    "Publication",
    "Subscription",
    "SubscriptionStats",
]
