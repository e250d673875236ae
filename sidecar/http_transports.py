"""``/sse`` (EventSource) and ``/poll`` (long polling): the fallbacks for networks that
strip ``Upgrade`` or kill long-lived sockets. Same session semantics as ``/ws`` in
protocol v1: auth, quotas, limits, send queue, replay and resume, drain.

- ``GET /sse?user=U&access_token=T[&session=S&last_seq=N]``: an event stream; each
  frame is ``id: <seq>`` + ``data: <v1 JSON>``; the browser's ``Last-Event-ID`` resumes.
  A comment (``: ping``) every heartbeat interval keeps proxies from cutting it.
  A close arrives as ``event: close`` with ``{"type": "close", "code", "reason"}``.
- ``GET /poll?user=U&access_token=T[&session=S&last_seq=N][&wait=25]``: answers
  ``{"session": S, "frames": [...]}`` at once when something is pending, else within
  ``wait`` seconds. ``last_seq`` acknowledges what the client has: frames after it are
  sent again if a response was lost. A poll for a session that is not on this pod
  resumes it here. No request for ``--poll-timeout`` seconds ends the session.
- ``POST /sse/send?session=S`` and ``POST /poll/send?session=S`` (same auth): a v1
  frame, or a JSON list of frames; 409 when the session is not on this pod.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Awaitable

import structlog
from aiohttp import web

from sidecar.admission import Refusal
from sidecar.client_session import ClientSession, open_session, start_session
from sidecar.core import CloseCode, envelope
from sidecar.gateway import GATEWAY_KEY, Gateway
from wsfleet.headers import POD_HEADER, REFUSAL_HEADER

log = structlog.get_logger()

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": f"{POD_HEADER}, {REFUSAL_HEADER}",
}
POLL_BUFFER = 1000  # frames handed to a poll client but not yet acknowledged, at most
MAX_WAIT_S = 55.0


def _refused(refusal: Refusal) -> web.Response:
    response = refusal.response()
    response.headers.update(CORS)
    return response


# -- SSE ------------------------------------------------------------------------------


class SseChannel:
    __slots__ = ("_pinging", "_request", "_response", "done")

    def __init__(self, response: web.StreamResponse, request: web.Request) -> None:
        self._response = response
        self._request = request
        self._pinging: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    takes_wire = False  # events, not WebSocket frames

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None]:
        """An event (a chunk of the chunked response: aiohttp encodes it, so it is awaited)."""
        event = (b"id: %d\n" % seq if seq else b"") + b"data: " + frame + b"\n\n"
        return self._response.write(event)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            payload = envelope.close(code, reason)
            await self._response.write(f"event: close\ndata: {payload}\n\n".encode())
        self.done.set()

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()
        self.done.set()

    def ping(self) -> None:
        if self._pinging is None or self._pinging.done():
            self._pinging = asyncio.ensure_future(self._ping())

    async def _ping(self) -> None:
        try:
            await self._response.write(b": ping\n\n")
        except (ConnectionError, RuntimeError):
            self.done.set()

    def idle_for(self, now: float) -> float:
        return 0.0


async def handle_sse(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    try:
        admission = await gateway.gatekeeper.admit(request, "sse")
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        return _refused(refusal)
    start = await start_session(gateway, request, admission, v1=True)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            POD_HEADER: gateway.settings.pod_id,
            **CORS,
        }
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
    except (ConnectionError, RuntimeError):
        gateway.sessions.remove(admission.connection_id)
        return response
    gateway.metrics.handshakes["accepted"] += 1
    channel = SseChannel(response, request)
    session = await open_session(gateway, admission, channel, "sse", start)
    del admission
    try:
        while not channel.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.done.wait(), 1.0)
            transport = request.transport
            if transport is None or transport.is_closing():
                break
    finally:
        if session.close_code is None:
            session.close_code = CloseCode.GOING_AWAY
        session.finish()
    return response


# -- long polling -------------------------------------------------------------------------


class PollChannel:
    """Frames wait here between polls; a poll takes what is there (or waits for it)."""

    __slots__ = ("_arrived", "_polls", "_room", "closed", "last_request", "pending", "session")

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self.closed: tuple[int, str] | None = None
        self.last_request = asyncio.get_running_loop().time()
        self.session: ClientSession | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._polls = 0  # polls taken so far: only the newest one may wait

    takes_wire = False  # JSON frames in a poll's answer, not WebSocket frames

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        if len(self.pending) >= POLL_BUFFER and self.closed is None:
            return self._append_when_room(frame, seq)  # the client is not polling
        self.pending.append((seq, frame))
        self._arrived.set()
        return None

    async def _append_when_room(self, frame: bytes, seq: int) -> None:
        while len(self.pending) >= POLL_BUFFER and self.closed is None:
            self._room.clear()
            await self._room.wait()
        self.pending.append((seq, frame))
        self._arrived.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._arrived.set()
        self._finish()

    def abort(self) -> None:
        if self.closed is None:
            self.closed = (CloseCode.ABNORMAL, "poll session expired")
        self._arrived.set()
        self._room.set()
        self._finish()

    def _finish(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.finish()

    def ping(self) -> None:
        return None

    def idle_for(self, now: float) -> float:
        return now - self.last_request

    def acknowledge(self, last_seq: int) -> None:
        """Forget frames the client has (numbered up to ``last_seq``); unnumbered frames
        (answers, notices, publications) wait for the poll that takes them."""
        kept = collections.deque((seq, f) for seq, f in self.pending if not seq or seq > last_seq)
        self.pending = kept
        self._room.set()

    async def take(self, wait_s: float) -> tuple[list[bytes], tuple[int, str] | None]:
        """What is pending, waiting up to ``wait_s`` for something. One poll per session
        waits at a time: a newer poll answers the one waiting at once, with nothing."""
        self.last_request = asyncio.get_running_loop().time()
        self._polls += 1
        mine = self._polls
        self._arrived.set()  # an older poll still waiting returns now
        if not self.pending and self.closed is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._arrived.wait()
        if mine != self._polls:  # replaced by a newer poll: it gets the frames
            return [], self.closed
        frames = [frame for _, frame in self.pending]
        # unnumbered frames (welcome, notices) are not replayable: hand them out once
        self.pending = collections.deque((seq, f) for seq, f in self.pending if seq)
        self._room.set()
        self.last_request = asyncio.get_running_loop().time()
        return frames, self.closed


def _poll_response(
    gateway: Gateway, session_id: str, frames: list[bytes], closed: tuple[int, str] | None
) -> web.Response:
    body = [json.loads(frame) for frame in frames]
    if closed is not None:
        body.append(json.loads(envelope.close(*closed)))
    return web.json_response(
        {"session": session_id, "frames": body},
        headers={POD_HEADER: gateway.settings.pod_id, **CORS},
    )


async def handle_poll(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    try:
        wait_s = min(MAX_WAIT_S, float(request.query.get("wait", gateway.settings.poll_wait_s)))
        last_seq = int(request.query.get("last_seq", "0"))
    except ValueError:
        return _refused(Refusal(400, "bad_request", "wait and last_seq must be numbers"))
    requested = request.query.get("session")
    existing = gateway.table.by_session.get(requested) if requested else None
    if isinstance(existing, ClientSession) and isinstance(existing.channel, PollChannel):
        try:
            identity, _ = gateway.gatekeeper.authenticate(request, request.query)
        except Refusal as refusal:
            return _refused(refusal)
        if identity.user_id != existing.user_id:
            return _refused(
                Refusal(403, "not_your_session", "this session belongs to another user")
            )
        channel = existing.channel
        channel.acknowledge(last_seq)
        frames, closed = await channel.take(wait_s)
        return _poll_response(gateway, existing.session_id, frames, closed)
    try:
        admission = await gateway.gatekeeper.admit(request, "poll")
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        return _refused(refusal)
    gateway.metrics.handshakes["accepted"] += 1
    start = await start_session(gateway, request, admission, v1=True)
    channel = PollChannel()
    session = await open_session(gateway, admission, channel, "poll", start)
    channel.session = session
    frames, closed = await channel.take(0.0 if channel.pending else wait_s)
    return _poll_response(gateway, session.session_id, frames, closed)


# -- client -> server for SSE and poll -----------------------------------------------------


async def handle_send(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        identity, _ = gateway.gatekeeper.authenticate(request, request.query)
    except Refusal as refusal:
        return _refused(refusal)
    session = gateway.table.by_session.get(request.query.get("session", ""))
    if not isinstance(session, ClientSession) or session.transport not in ("sse", "poll"):
        return _refused(
            Refusal(409, "session_not_here", "no such session on this pod: reconnect to resume it")
        )
    if session.user_id != identity.user_id:
        return _refused(Refusal(403, "not_your_session", "this session belongs to another user"))
    if (
        request.content_length is not None
        and request.content_length > gateway.settings.max_message_bytes * 16
    ):
        return _refused(Refusal(413, "too_big", "request body too large"))
    body = await request.read()
    try:  # too deep a nesting is as bad a body as broken JSON
        parsed = json.loads(body)
        frames = parsed if isinstance(parsed, list) else [parsed]
        encoded = [json.dumps(frame).encode() for frame in frames]
    except (ValueError, RecursionError):
        return _refused(
            Refusal(400, "bad_frame", "the body must be a v1 frame or a list of frames")
        )
    accepted = 0
    for data in encoded:
        if len(data) > gateway.settings.max_message_bytes:
            await session.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return _refused(Refusal(413, "too_big", "a message exceeds the maximum size"))
        if not await session.from_client(data, False):
            break
        accepted += 1
    return web.json_response({"accepted": accepted}, status=202, headers=CORS)


async def handle_preflight(request: web.Request) -> web.Response:
    sources = request.app[GATEWAY_KEY].gatekeeper.hash_sources
    allowed = ["Authorization", "Content-Type"]
    if sources is not None and sources.header:
        allowed.append(sources.header)  # the pool's hash header (from the policy)
    return web.Response(
        status=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ", ".join(allowed),
            "Access-Control-Max-Age": "600",
        },
    )


def add_http_transport_routes(app: web.Application) -> None:
    app.router.add_get("/sse", handle_sse)
    app.router.add_post("/sse/send", handle_send)
    app.router.add_get("/poll", handle_poll)
    app.router.add_post("/poll/send", handle_send)
    for path in ("/sse", "/sse/send", "/poll", "/poll/send"):
        app.router.add_route("OPTIONS", path, handle_preflight)
