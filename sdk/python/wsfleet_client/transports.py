"""The three ways the client reaches a gateway, behind one small interface.

Each ``open`` returns a :class:`Link` that yields protocol v1 frames (dicts) and
sends them; when the server ends the link, the last frame is a ``close`` frame
(real for SSE and polling, made from the WebSocket close code otherwise).

:class:`TransportBlocked` means "this transport does not get through here, try
the next" (an upgrade stripped by a proxy, a route that refuses it); a
:class:`Refused` handshake (401/403/429/503...) would fail on any transport.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

PROTOCOL = "wsfleet.v1"
Frame = dict[str, Any]
SERVER_REFUSALS = frozenset({401, 403, 429, 503})
LIVENESS: Frame = {"type": "liveness"}  # not from the server: "the link is alive"


class TransportBlocked(Exception):
    """This transport cannot reach the gateway from here: try the next one."""


class Refused(Exception):
    """The gateway refused the handshake (any transport would be refused the same)."""

    def __init__(self, status: int, retry_after_s: float | None) -> None:
        super().__init__(f"handshake refused: HTTP {status}")
        self.status = status
        self.retry_after_s = retry_after_s


class Link(Protocol):
    pod: str

    def frames(self) -> AsyncIterator[Frame]: ...

    async def send(self, frame: Frame) -> None: ...

    async def close(self) -> None: ...


def _url(base: str, path: str, params: dict[str, str]) -> str:
    parts = urlsplit(base)
    scheme = parts.scheme
    if path != "/ws":
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


SEND_ATTEMPTS = 5  # a POST refused with 429 is sent again at most this many times in all
MAX_SEND_WAIT_S = 5.0  # the longest Retry-After a send waits


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class WebSocketLink:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.pod = ws._response.headers.get("x-wsfleet-pod", "") if ws._response else ""

    async def frames(self) -> AsyncIterator[Frame]:
        close_reason = ""
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                yield json.loads(message.data)
            elif message.type is aiohttp.WSMsgType.PING:
                await self._ws.pong(message.data)
                yield LIVENESS
            elif message.type is aiohttp.WSMsgType.CLOSE:
                close_reason = str(message.extra or "")
                break
            elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        yield {"type": "close", "code": self._ws.close_code or 1006, "reason": close_reason}

    async def send(self, frame: Frame) -> None:
        await self._ws.send_str(json.dumps(frame))

    async def close(self) -> None:
        await self._ws.close()


async def open_websocket(
    session: aiohttp.ClientSession, base: str, params: dict[str, str], token: str
) -> WebSocketLink:
    try:
        ws = await session.ws_connect(
            _url(base, "/ws", params),
            protocols=(PROTOCOL,),
            headers={"Authorization": f"Bearer {token}"},
            autoping=False,  # server pings are liveness for the client's watchdog
            autoclose=True,
        )
    except aiohttp.WSServerHandshakeError as refused:
        if refused.status in SERVER_REFUSALS:
            raise Refused(refused.status, _retry_after(refused.headers)) from None
        raise TransportBlocked(f"websocket upgrade refused: HTTP {refused.status}") from None
    if ws.protocol != PROTOCOL:
        await ws.close()
        raise TransportBlocked("the server does not speak wsfleet.v1 over WebSocket")
    return WebSocketLink(ws)


class _HttpLink:
    """What SSE and polling share: sending is a POST to ``<path>/send``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        path: str,
        params: dict[str, str],
        token: str,
    ) -> None:
        self._http = session
        self._base = base
        self._path = path
        self._params = params
        self._token = token
        self.session_id = ""
        self.pod = ""
        # each message is its own POST: concurrent ones could arrive out of order, and the
        # gateway drops a client seq it has already passed; so one at a time, in call order
        self._sending = asyncio.Lock()

    async def send(self, frame: Frame) -> None:
        async with self._sending:
            await self._post(frame)

    async def _post(self, frame: Frame) -> None:
        """POST one frame; a 429 (over the connection's rate: nothing of the POST was
        taken) is sent again after its ``Retry-After``, a few times at most."""
        params = {**self._params, "session": self.session_id}
        body = json.dumps(frame)
        for attempt in range(SEND_ATTEMPTS):
            async with self._http.post(
                _url(self._base, f"{self._path}/send", params),
                data=body,
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "text/plain"},
            ) as response:
                if response.status < 300:
                    return
                if response.status != 429 or attempt == SEND_ATTEMPTS - 1:
                    raise ConnectionError(f"send refused: HTTP {response.status}")
                wait_s = _retry_after(response.headers) or 1.0
            await asyncio.sleep(min(max(wait_s, 0.0), MAX_SEND_WAIT_S))


class SseLink(_HttpLink):
    def __init__(self, response: aiohttp.ClientResponse, *args: Any) -> None:
        super().__init__(*args)
        self._response = response
        self.pod = response.headers.get("x-wsfleet-pod", "")

    async def frames(self) -> AsyncIterator[Frame]:
        event, data = "message", list[str]()
        try:
            async for raw in self._response.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        frame = json.loads("\n".join(data))
                        if frame.get("type") == "welcome":
                            self.session_id = frame["session"]
                        yield frame
                        if event == "close":
                            return
                    event, data = "message", list[str]()
                elif line.startswith(":"):
                    yield LIVENESS  # a keep-alive comment
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line.startswith("event:"):
                    event = line[6:].strip()
        except (aiohttp.ClientError, ConnectionError):
            pass
        yield {"type": "close", "code": 1006, "reason": "event stream ended"}

    async def close(self) -> None:
        self._response.close()


async def open_sse(
    session: aiohttp.ClientSession, base: str, params: dict[str, str], token: str
) -> SseLink:
    try:
        response = await session.get(
            _url(base, "/sse", params),
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
    except aiohttp.ClientError as exc:
        raise TransportBlocked(f"event stream failed: {exc}") from None
    if response.status in SERVER_REFUSALS:
        response.close()
        raise Refused(response.status, _retry_after(response.headers))
    if response.status != 200 or "text/event-stream" not in response.headers.get(
        "Content-Type", ""
    ):
        response.close()
        raise TransportBlocked(f"event stream refused: HTTP {response.status}")
    return SseLink(response, session, base, "/sse", params, token)


class PollLink(_HttpLink):
    def __init__(self, first: dict[str, Any], pod: str, *args: Any) -> None:
        super().__init__(*args)
        self._first = first
        self.pod = pod
        self.session_id = first.get("session", "")
        self._closed = False

    async def frames(self) -> AsyncIterator[Frame]:
        body: dict[str, Any] | None = self._first
        last_seq = int(self._params.get("last_seq", "0"))
        while not self._closed:
            if body is None:
                params = {**self._params, "session": self.session_id, "last_seq": str(last_seq)}
                try:
                    async with self._http.get(
                        _url(self._base, "/poll", params),
                        headers={"Authorization": f"Bearer {self._token}"},
                        timeout=aiohttp.ClientTimeout(total=60),
                    ) as response:
                        if response.status != 200:
                            yield {
                                "type": "close",
                                "code": 1006,
                                "reason": f"poll HTTP {response.status}",
                            }
                            return
                        body = await response.json()
                except (aiohttp.ClientError, TimeoutError):
                    yield {"type": "close", "code": 1006, "reason": "poll failed"}
                    return
            yield LIVENESS  # every poll answer, even an empty one
            for frame in body.get("frames", []):
                if frame.get("seq"):
                    last_seq = max(last_seq, int(frame["seq"]))
                yield frame
                if frame.get("type") == "close":
                    return
            body = None

    async def close(self) -> None:
        self._closed = True


async def open_poll(
    session: aiohttp.ClientSession, base: str, params: dict[str, str], token: str
) -> PollLink:
    try:
        async with session.get(
            _url(base, "/poll", {**params, "wait": "0"}),
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            if response.status in SERVER_REFUSALS:
                raise Refused(response.status, _retry_after(response.headers))
            if response.status != 200:
                raise TransportBlocked(f"long polling refused: HTTP {response.status}")
            first = await response.json()
            pod = response.headers.get("x-wsfleet-pod", "")
    except aiohttp.ClientError as exc:
        raise TransportBlocked(f"long polling failed: {exc}") from None
    return PollLink(first, pod, session, base, "/poll", params, token)


Opener = Callable[[aiohttp.ClientSession, str, dict[str, str], str], Awaitable[Link]]
OPENERS: dict[str, Opener] = {"websocket": open_websocket, "sse": open_sse, "poll": open_poll}

__all__ = [
    "OPENERS",
    "Frame",
    "Link",
    "Refused",
    "TransportBlocked",
]
