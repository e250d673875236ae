"""The reconnecting WebSocket client.

``async with Client(url, user, token) as client: async for message in client: ...``

It keeps one connection open: on a close or a network error it reconnects
after a :class:`~wsfleet_client.backoff.Backoff` delay, honouring the
server's hint (``retry_after_ms`` in a 1012/1013 close reason, ``Retry-After`` on
a 429/503 handshake answer). It stops for good on a refusal that retrying cannot
fix (``max_auth_refusals`` 401/403 in a row, a 1008 close) or when the backoff's
time budget runs out.
A watchdog reconnects when the server goes silent (no frame, not even a ping,
for ``silence_timeout_s``). Messages sent while disconnected wait (bounded) and
go out after the reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from wsfleet_client import connect_url
from wsfleet_client.backoff import Backoff

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
_HINT = re.compile(r"retry_after_ms=(\d+)")
FATAL_CLOSES = frozenset({1008})
POD_HEADER = "x-wsfleet-pod"


class ClientGaveUp(Exception):
    """The client stopped reconnecting; ``reason`` says why."""


@dataclass
class ClientStats:
    """What happened, for callers that measure (tests, benchmarks)."""

    attempts: int = 0
    connects: int = 0
    failures: int = 0  # handshakes refused or failed
    pods: list[str] = field(default_factory=list)  # the pod of each connect
    disconnected_s: list[float] = field(default_factory=list)  # each gap between connections
    closes: list[tuple[int, str]] = field(default_factory=list)


class Client:
    """One logical connection to wsfleet that survives pod losses and drains."""

    def __init__(
        self,
        url: str,
        user_id: str,
        token: TokenSource,
        backoff: Backoff | None = None,
        silence_timeout_s: float = 45.0,
        max_pending: int = 1000,
        session: aiohttp.ClientSession | None = None,
        on_connect: Callable[[str], None] | None = None,
        on_close: Callable[[int, str], None] | None = None,
        max_auth_refusals: int = 3,
    ) -> None:
        self._url = connect_url(url, user_id)
        self._token = token
        self._backoff = backoff or Backoff()
        self._silence_timeout_s = silence_timeout_s
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._outbox: collections.deque[str | bytes] = collections.deque(maxlen=max_pending)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._own_session = session is None
        self._session = session
        self._on_connect = on_connect
        self._on_close = on_close
        self._max_auth_refusals = max_auth_refusals
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = ClientStats()
        self.error: ClientGaveUp | None = None
        self.connected = asyncio.Event()

    @property
    def pod(self) -> str | None:
        return self.stats.pods[-1] if self.connected.is_set() and self.stats.pods else None

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_session and self._session is not None:
            await self._session.close()

    async def send(self, data: str | bytes) -> None:
        """Send now if connected, else after the next connect (oldest dropped past the bound)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await (ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data))
                return
            except (ConnectionError, RuntimeError):
                pass
        self._outbox.append(data)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
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

    async def _run(self) -> None:
        refused_auth = 0
        gap_started = time.monotonic()
        try:
            while not self._closing:
                hint_s: float | None = None
                self.stats.attempts += 1
                try:
                    token = await self._token_value()
                    assert self._session is not None
                    ws = await self._session.ws_connect(
                        self._url,
                        headers={"Authorization": f"Bearer {token}"},
                        heartbeat=None,
                        autoping=True,
                    )
                except aiohttp.WSServerHandshakeError as refused:
                    self.stats.failures += 1
                    if refused.status in (401, 403):
                        refused_auth += 1
                        if refused_auth >= self._max_auth_refusals:
                            raise ClientGaveUp(
                                f"handshake refused: HTTP {refused.status}"
                            ) from None
                    hint_s = _retry_after(refused.headers)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    self.stats.failures += 1
                else:
                    refused_auth = 0
                    self.stats.disconnected_s.append(time.monotonic() - gap_started)
                    code, reason = await self._serve(ws)
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
                await asyncio.sleep(delay)
        except ClientGaveUp as gave_up:
            self.error = gave_up
            self._inbox.put_nowait(None)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
        """Hold one connection until it ends; returns its close code and reason."""
        self._ws = ws
        pod = ws._response.headers.get(POD_HEADER, "") if ws._response is not None else ""
        self.stats.connects += 1
        self.stats.pods.append(pod)
        self.connected.set()
        if self._on_connect is not None:
            self._on_connect(pod)
        held_since = time.monotonic()
        code, reason = 1006, ""
        try:
            while self._outbox and not ws.closed:
                item = self._outbox.popleft()
                await (ws.send_str(item) if isinstance(item, str) else ws.send_bytes(item))
            while True:
                try:
                    message = await ws.receive(timeout=self._silence_timeout_s)
                except TimeoutError:  # the server went silent: assume the path is dead
                    code, reason = 1006, "silent server"
                    break
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._inbox.put_nowait(message.data)
                elif message.type is aiohttp.WSMsgType.CLOSE:
                    code, reason = int(message.data or 1005), str(message.extra or "")
                    break
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    code = ws.close_code or 1006
                    break
        except (ConnectionError, RuntimeError):
            code = 1006
        finally:
            self.connected.clear()
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()
        if time.monotonic() - held_since > 5.0:
            self._backoff.reset()  # it held: the next loss starts from a small window
        return code, reason


def _retry_after(headers: object) -> float | None:
    value = getattr(headers, "get", lambda _key: None)("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
