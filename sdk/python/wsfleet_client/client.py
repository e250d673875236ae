"""The client: one logical session with wsfleet that survives drains, pod losses and
networks that block WebSockets.

``async with Client(url, user, token) as client: async for message in client: ...``

- **Transports**: WebSocket, then SSE, then long polling (``transports``), each in
  protocol v1; a transport that does not get through (upgrade stripped, route refusing
  it) is skipped, and the one that worked is tried first from then on.
- **Reconnects** after a :class:`~wsfleet_client.backoff.Backoff` delay (full jitter),
  honouring the server's hint (``retry_after_ms`` in a 1012/1013 close reason,
  ``Retry-After`` on a 429/503). It stops for good after ``max_auth_refusals``
  401/403 in a row, on a 1008 close, or when the backoff's time budget runs out.
- **Resume**: it reconnects with its session id and the last sequence number it saw;
  the gateway replays exactly what it missed, on any pod. If the gap fell out of the
  replay window, the welcome says ``resync`` (``on_resync`` is called).
- **No duplicate sends**: each sent message has a client sequence number; after a
  reconnect, messages the gateway did not acknowledge (welcome ``cseq``) are sent again,
  and the gateway drops any it already had.
- **Watchdog**: no frame, ping or keep-alive for ``silence_timeout_s`` means the path is
  dead: reconnect.
- **Token refresh**: the gateway closes a session whose token expired (4401). Given a
  token *source* (a function), the client asks it for a new token shortly before the
  current one expires and sends it on the live session (a ``refresh`` frame);
  :meth:`Client.refresh_token` does the same with a token in hand.
- **Channels**: :meth:`Client.subscribe` follows a channel (``wsfleet_client.channels``
  keeps each subscription's position and recovers what a reconnect or a gap missed);
  channel frames go to the subscriptions, never to the message iterator.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from wsfleet_client.backoff import Backoff
from wsfleet_client.channels import (
    CHANNEL_FRAMES,
    DEFAULT_MAXSIZE,
    ChannelError,
    Channels,
    Subscription,
)
from wsfleet_client.transports import OPENERS, Frame, Link, Refused, TransportBlocked

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
REFRESH_AHEAD = 0.2  # refresh when this share of the token's remaining life is left ...
REFRESH_AHEAD_MAX_S = 60.0  # ... but at most this long before it expires
_HINT = re.compile(r"retry_after_ms=(\d+)")
FATAL_CLOSES = frozenset({1008})


class ClientGaveUp(Exception):
    """The client stopped reconnecting; the message says why."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the server: its sequence number in the session, and its data."""

    seq: int
    data: str | bytes


@dataclass
class ClientStats:
    """What happened, for callers that measure (tests, benchmarks)."""

    attempts: int = 0
    connects: int = 0
    failures: int = 0  # handshakes refused or failed
    pods: list[str] = field(default_factory=list)  # the pod of each connect
    transports: list[str] = field(default_factory=list)  # the transport of each connect
    disconnected_s: list[float] = field(default_factory=list)  # each gap between connections
    closes: list[tuple[int, str]] = field(default_factory=list)
    resumes: int = 0
    replayed: int = 0
    resyncs: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by kind
    attempted_at: list[float] = field(default_factory=list)  # time.monotonic() of each attempt
    # when each attempt was due (the moment the client decided to retry plus its backoff):
    # what many independent clients would do, even when one busy process hosts them all
    # and its timers fire late and together
    due_at: list[float] = field(default_factory=list)

    def failed(self, kind: str) -> None:
        self.failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Client:
    """One logical connection to wsfleet."""

    def __init__(
        self,
        url: str,
        user_id: str,
        token: TokenSource,
        backoff: Backoff | None = None,
        transports: tuple[str, ...] = ("websocket", "sse", "poll"),
        silence_timeout_s: float = 45.0,
        max_pending: int = 1000,
        session: aiohttp.ClientSession | None = None,
        on_connect: Callable[[str], None] | None = None,
        on_close: Callable[[int, str], None] | None = None,
        on_resync: Callable[[], None] | None = None,
        max_auth_refusals: int = 3,
        on_subscription: Callable[[Subscription], None] | None = None,
    ) -> None:
        unknown = [name for name in transports if name not in OPENERS]
        if unknown or not transports:
            raise ValueError(f"transports must be some of {sorted(OPENERS)}, not {unknown}")
        self._url = url
        self._user_id = user_id
        self._token = token
        self._backoff = backoff or Backoff()
        self._transports = list(transports)
        self._silence_timeout_s = silence_timeout_s
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._unsent: collections.deque[Frame] = collections.deque(maxlen=max_pending)
        self._sent: collections.deque[Frame] = collections.deque(maxlen=max_pending)
        self._own_session = session is None
        self._http = session
        self._on_connect = on_connect
        self._on_close = on_close
        self._on_resync = on_resync
        self._max_auth_refusals = max_auth_refusals
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cseq = 0
        self._current_token = ""  # the token of the live session
        self._refresher: asyncio.Task[None] | None = None
        self.session_id = ""
        self.last_seq = 0
        self.transport = ""
        self.stats = ClientStats()
        self.error: ClientGaveUp | None = None
        self.connected = asyncio.Event()
        self._channels = Channels(self._send_channel_frame, on_subscription)

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The channels followed, the app's and the server's (``on_subscription``)."""
        return self._channels.subscriptions

    @property
    def pod(self) -> str | None:
        return self.stats.pods[-1] if self.connected.is_set() and self.stats.pods else None

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._channels.close()
        if self._own_session and self._http is not None:
            await self._http.close()

    async def send(self, data: str | bytes) -> None:
        """Send a message (now, or after the next connect); it is delivered once."""
        self._cseq += 1
        frame: Frame = {"type": "message", "cseq": self._cseq}
        if isinstance(data, bytes):
            frame["data_b64"] = base64.b64encode(data).decode()
        else:
            frame["data"] = data
        link = self._link
        if link is not None and self.connected.is_set():
            try:
                await link.send(frame)
                self._sent.append(frame)
                return
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
        self._unsent.append(frame)

    def subscribe(self, channel: str, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        """Follow ``channel``: its :class:`Subscription` at once (the same one if it is
        followed already); the subscribe is sent now if connected, else after the next
        connect. The subscription keeps up to ``maxsize`` publications for the app (then
        the oldest go)."""
        return self._channels.subscribe(channel, maxsize)

    async def _send_channel_frame(self, frame: Frame) -> bool:
        """Send a channel request on the live link; False if there is none or it failed."""
        link = self._link
        if link is None or not self.connected.is_set():
            return False
        try:
            await link.send(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    async def refresh_token(self, token: str) -> None:
        """Go on with ``token`` (same user): sent to the live session, used to reconnect."""
        self._token = token
        await self._send_refresh(token)

    async def _send_refresh(self, token: str) -> None:
        self._current_token = token
        link = self._link
        if link is not None and self.connected.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await link.send({"type": "refresh", "token": token})

    async def _keep_token_fresh(self) -> None:
        """While a link lives: before its token expires, fetch a new one and send it."""
        while True:
            expires_at = _expiry(self._current_token)
            if expires_at is None:
                return  # not a JWT with an exp: nothing to go by
            left = expires_at - time.time()
            await asyncio.sleep(max(0.0, left - min(REFRESH_AHEAD_MAX_S, left * REFRESH_AHEAD)))
            token = await self._token_value()
            if token == self._current_token or (_expiry(token) or 0) <= expires_at:
                return  # the source has nothing newer: the session ends at expiry
            await self._send_refresh(token)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            item = await self._inbox.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item

    async def _token_value(self) -> str:
        token = self._token
        if isinstance(token, str):
            return token
        value = token()
        return value if isinstance(value, str) else await value

    async def _open(self) -> tuple[str, Link]:
        """Try the transports, the last one that worked first."""
        params = {"user": self._user_id}
        if self.session_id:
            params.update(session=self.session_id, last_seq=str(self.last_seq))
        token = await self._token_value()
        self._current_token = token
        assert self._http is not None
        blocked: list[str] = []
        for name in list(self._transports):
            try:
                link = await OPENERS[name](self._http, self._url, params, token)
            except TransportBlocked as exc:
                blocked.append(f"{name}: {exc}")
                continue
            if self._transports[0] != name:  # remember what worked
                self._transports.remove(name)
                self._transports.insert(0, name)
            return name, link
        raise TransportBlocked("; ".join(blocked))

    async def _run(self) -> None:
        refused_auth = 0
        gap_started = due = time.monotonic()
        try:
            while not self._closing:
                hint_s: float | None = None
                self.stats.attempts += 1
                self.stats.attempted_at.append(time.monotonic())
                self.stats.due_at.append(due)
                try:
                    transport, link = await self._open()
                except Refused as refused:
                    self.stats.failed(f"HTTP {refused.status}")
                    if refused.status in (401, 403):
                        refused_auth += 1
                        if refused_auth >= self._max_auth_refusals:
                            raise ClientGaveUp(str(refused)) from None
                    hint_s = refused.retry_after_s
                except (TransportBlocked, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.stats.failed(
                        type(exc).__name__
                        + (f": {exc}"[:60] if isinstance(exc, TransportBlocked) else "")
                    )
                else:
                    refused_auth = 0
                    self.stats.disconnected_s.append(time.monotonic() - gap_started)
                    code, reason = await self._serve(transport, link)
                    gap_started = time.monotonic()
                    if self._closing:
                        return
                    self.stats.closes.append((code, reason))
                    if self._on_close is not None:
                        self._on_close(code, reason)
                    if code in FATAL_CLOSES:
                        raise ClientGaveUp(f"closed by the server with {code}: {reason}")
                    match = _HINT.search(reason)
                    hint_s = int(match.group(1)) / 1000 if match else None
                delay = self._backoff.next_delay(hint_s)
                if delay is None:
                    raise ClientGaveUp("gave up reconnecting: the backoff's time budget ran out")
                due = time.monotonic() + delay
                await asyncio.sleep(delay)
        except ClientGaveUp as gave_up:
            self.error = gave_up
            self._channels.close(ChannelError("disconnected", f"the client gave up: {gave_up}"))
            self._inbox.put_nowait(None)

    async def _serve(self, transport: str, link: Link) -> tuple[int, str]:
        """Hold one link until it ends; returns its close code and reason."""
        self._link = link
        held_since = time.monotonic()
        code, reason = 1006, "link lost"
        refresher = asyncio.create_task(self._keep_token_fresh()) if callable(self._token) else None
        frames = link.frames().__aiter__()
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(frames.__anext__(), self._silence_timeout_s)
                except (TimeoutError, StopAsyncIteration):
                    reason = "silent server" if not self.connected.is_set() else reason
                    break
                kind = frame.get("type")
                if kind == "welcome":
                    await self._welcome(transport, link, frame)
                elif kind == "message":
                    seq = int(frame.get("seq", 0))
                    if seq and seq <= self.last_seq:
                        continue  # already had it
                    self.last_seq = max(self.last_seq, seq)
                    data = (
                        base64.b64decode(frame["data_b64"])
                        if "data_b64" in frame
                        else frame.get("data", "")
                    )
                    self._inbox.put_nowait(Message(seq, data))
                elif kind in CHANNEL_FRAMES:
                    await self._channels.handle(frame)
                elif kind == "close":
                    code, reason = int(frame.get("code", 1006)), str(frame.get("reason", ""))
                    break
        except (ConnectionError, RuntimeError, aiohttp.ClientError, ValueError):
            code = 1006
        finally:
            if refresher is not None:
                refresher.cancel()
            self.connected.clear()
            self._channels.disconnected()
            self._link = None
            with contextlib.suppress(Exception):
                await link.close()
        if time.monotonic() - held_since > 5.0:
            self._backoff.reset()  # it held: the next loss starts from a small window
        return code, reason

    async def _welcome(self, transport: str, link: Link, frame: Frame) -> None:
        resumed = bool(frame.get("resumed"))
        if resumed:
            self.stats.resumes += 1
            self.stats.replayed += int(frame.get("replayed", 0))
        if frame.get("resync"):
            self.stats.resyncs += 1
            self.last_seq = int(frame.get("seq", 0))  # start over from what exists now
            if self._on_resync is not None:
                self._on_resync()
        if not resumed:
            self._sent.clear()  # a new session has none of our old messages: nothing to resend
        self.session_id = str(frame.get("session", ""))
        self.transport = transport
        link.pod = str(frame.get("pod") or link.pod)  # a WebSocket's 101 does not name it
        delivered = int(frame.get("cseq", 0))
        again = [f for f in self._sent if int(f["cseq"]) > delivered] if resumed else []
        pending = [*again, *self._unsent]
        self._sent.clear()
        self._unsent.clear()
        for item in pending:
            await link.send(item)
            self._sent.append(item)
        self.stats.connects += 1
        self.stats.pods.append(link.pod)
        self.stats.transports.append(transport)
        self.connected.set()
        await self._channels.connected()  # every channel followed, again, from its position
        if self._on_connect is not None:
            self._on_connect(link.pod)


def _expiry(token: str) -> float | None:
    """The ``exp`` of a JWT, read without verifying it (the server verifies); None if the
    token is not a JWT with a numeric ``exp``."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
