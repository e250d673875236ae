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
  frame, or a JSON list of frames; 409 when the session is not on this pod. Bounded
  before any parse (:mod:`sidecar.core.post_frames`): a body over ``--post-max-bytes``
  or with more than ``--post-max-frames`` frames is refused (413), and so is a frame over
  ``--max-message-bytes`` (413, and the session closes with 1009 as a WebSocket's
  would); beyond the connection's rates (``--messages-per-second``,
  ``--bytes-per-second``: every frame and body byte counted) a POST is refused whole
  (429). Nothing of a refused POST is handed on; nothing accepted before it is lost.

A poll session's buffer is bounded in frames and bytes (``--poll-buffer-bytes``,
:mod:`sidecar.core.poll_buffer`): a client that does not acknowledge what it got is cut
(1013) like a WebSocket client that does not read. Polls count against the connection's
message rate too (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from sidecar.admission import Refusal, head_of
from sidecar.client_session import ClientSession, open_session, start_session
from sidecar.core import CloseCode, envelope
from sidecar.core.poll_buffer import DEFAULT_MAX_BYTES, PollBuffer, poll_answer
from sidecar.core.post_frames import FrameTooBig, OverRate, PostLimits, PostRefused, read_post
from sidecar.edge_drain import note_edge
from sidecar.gateway import GATEWAY_KEY, Gateway
from wsfleet import tracing
from wsfleet.headers import POD_HEADER, REFUSAL_HEADER

log = structlog.get_logger()

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": f"{POD_HEADER}, {REFUSAL_HEADER}",
}
POLL_BUFFER = 1000  # frames handed to a poll client but not yet acknowledged, at most
MAX_WAIT_S = 55.0
READ_CHUNK_BYTES = 64 * 1024


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

    def written_to(self) -> bool:
        return False

    async def _ping(self) -> None:
        try:
            await self._response.write(b": ping\n\n")
        except (ConnectionError, RuntimeError):
            self.done.set()

    def idle_for(self, now: float) -> float:
        return 0.0


async def handle_sse(request: web.Request) -> web.StreamResponse:
    with tracing.handshake(request.headers, "sse"):  # nothing when tracing is off
        opened = await _open_sse(request)
    if not isinstance(opened, tuple):
        return opened
    response, channel, session = opened
    del opened
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


async def _open_sse(
    request: web.Request,
) -> web.StreamResponse | tuple[web.StreamResponse, SseChannel, ClientSession]:
    """The session open (traced and timed like a WebSocket handshake): a refusal, or the
    event stream, its channel and its session."""
    gateway = request.app[GATEWAY_KEY]
    started = time.perf_counter()
    try:
        with tracing.span(tracing.ADMISSION_SPAN):
            admission = await gateway.gatekeeper.admit(head_of(request), "sse")
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        tracing.annotate(outcome=refusal.reason)
        return _refused(refusal)
    start = await start_session(gateway, request.headers, admission, v1=True)
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
        tracing.annotate(outcome="client_gone")
        return response
    gateway.metrics.handshakes["accepted"] += 1
    channel = SseChannel(response, request)
    session = await open_session(gateway, admission, channel, "sse", start)
    note_edge(gateway.table, session.connection_id, request.headers)
    gateway.metrics.observe_handshake("sse", time.perf_counter() - started)
    tracing.annotate(
        outcome="accepted", connection_id=session.connection_id, session_id=session.session_id
    )
    return response, channel, session


# -- long polling -------------------------------------------------------------------------


class PollChannel:
    """Frames wait here between polls (a bounded :class:`PollBuffer`); a poll takes what
    is there (or waits for it). A write to a full buffer waits for room: the session's
    writer, and so its send queue and the slow-consumer cut, see a client that does not
    acknowledge as one that does not read."""

    __slots__ = (
        "_arrived",
        "_polls",
        "_room",
        "buffer",
        "closed",
        "last_request",
        "on_closed",
        "opening",
        "session",
    )

    def __init__(self, max_frames: int = POLL_BUFFER, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.buffer = PollBuffer(max_frames, max_bytes)
        self.closed: tuple[int, str] | None = None
        self.last_request = asyncio.get_running_loop().time()
        self.session: ClientSession | None = None
        # while the session opens, its welcome and replay are written whatever the bound
        # (the replay window bounds them): nothing takes them before the first answer
        self.opening = True
        # told of a close by the gateway, so that a poll that was not waiting gets it later
        self.on_closed: Callable[[int, str], None] | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._polls = 0  # polls taken so far: only the newest one may wait

    takes_wire = False  # JSON frames in a poll's answer, not WebSocket frames

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        if not self.buffer.has_room and self.closed is None and not self.opening:
            return self._append_when_room(frame, seq)  # the client is not acknowledging
        self.buffer.add(seq, frame)
        self._arrived.set()
        return None

    async def _append_when_room(self, frame: bytes, seq: int) -> None:
        while not self.buffer.has_room and self.closed is None:
            self._room.clear()
            await self._room.wait()
        self.buffer.add(seq, frame)
        self._arrived.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        if self.on_closed is not None:
            self.on_closed(code, reason)
        self._arrived.set()
        self._room.set()
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

    def written_to(self) -> bool:
        return False

    def idle_for(self, now: float) -> float:
        return now - self.last_request

    def acknowledge(self, last_seq: int) -> None:
        """Forget frames the client has (numbered up to ``last_seq``); unnumbered frames
        (answers, notices, publications) wait for the poll that takes them."""
        self.buffer.acknowledge(last_seq)
        self._room.set()

    async def take(self, wait_s: float) -> tuple[list[bytes], tuple[int, str] | None]:
        """What is pending, waiting up to ``wait_s`` for something. One poll per session
        waits at a time: a newer poll answers the one waiting at once, with nothing."""
        self.last_request = asyncio.get_running_loop().time()
        self._polls += 1
        mine = self._polls
        self._arrived.set()  # an older poll still waiting returns now
        if not self.buffer and self.closed is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._arrived.wait()
        if mine != self._polls:  # replaced by a newer poll: it gets the frames
            return [], self.closed
        frames = self.buffer.take()
        self._room.set()
        self.last_request = asyncio.get_running_loop().time()
        return frames, self.closed


def _poll_response(
    gateway: Gateway, session_id: str, frames: list[bytes], closed: tuple[int, str] | None
) -> web.Response:
    return web.Response(
        body=poll_answer(session_id, frames, closed),
        content_type="application/json",
        headers={POD_HEADER: gateway.settings.pod_id, **CORS},
    )


def _rate_limited(message: str) -> web.Response:
    return _refused(Refusal(429, "rate_limited", message, retry_after_s=1))


def _now() -> float:
    return asyncio.get_running_loop().time()


def _remember_close(
    gateway: Gateway, session_id: str, user_id: str, code: int, reason: str
) -> None:
    gateway.poll_closes.add(session_id, user_id, code, reason, _now())


def _closed_between_polls(gateway: Gateway, request: web.Request, session_id: str) -> web.Response:
    """A poll of a session that the gateway closed while no poll was waiting: its close."""
    try:
        identity, _ = gateway.gatekeeper.authenticate(head_of(request), request.query)
    except Refusal as refusal:
        return _refused(refusal)
    closed = gateway.poll_closes.take(session_id, identity.user_id, _now())
    if closed is None:
        return _refused(Refusal(403, "not_your_session", "this session belongs to another user"))
    return _poll_response(gateway, session_id, [], closed)


async def handle_poll(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    try:
        wait_s = float(request.query.get("wait", gateway.settings.poll_wait_s))
        last_seq = int(request.query.get("last_seq", "0"))
    except ValueError:
        wait_s = math.nan
    if not math.isfinite(wait_s):
        return _refused(Refusal(400, "bad_request", "wait and last_seq must be numbers"))
    wait_s = min(MAX_WAIT_S, max(0.0, wait_s))
    requested = request.query.get("session")
    existing = gateway.table.by_session.get(requested) if requested else None
    if requested and existing is None and gateway.poll_closes.holds(requested, _now()):
        return _closed_between_polls(gateway, request, requested)
    if isinstance(existing, ClientSession) and isinstance(existing.channel, PollChannel):
        try:
            identity, _ = gateway.gatekeeper.authenticate(head_of(request), request.query)
        except Refusal as refusal:
            return _refused(refusal)
        if identity.user_id != existing.user_id:
            return _refused(
                Refusal(403, "not_your_session", "this session belongs to another user")
            )
        channel = existing.channel
        # a poll is a frame of no bytes to the session's limits; never a close (polls are
        # how the client hears of one)
        if not existing.core.client_batch(1, 0, _now(), may_close=False):
            return _rate_limited("polling exceeds this connection's rate")
        channel.acknowledge(last_seq)
        frames, closed = await channel.take(wait_s)
        if closed is not None:  # this poll carries the close: no later one needs it
            gateway.poll_closes.take(existing.session_id, existing.user_id, _now())
        return _poll_response(gateway, existing.session_id, frames, closed)
    with tracing.handshake(request.headers, "poll"):  # nothing when tracing is off
        opened = await _open_poll(gateway, request)
    if isinstance(opened, web.Response):
        return opened
    session, channel = opened
    del opened
    frames, closed = await channel.take(0.0 if channel.buffer else wait_s)
    return _poll_response(gateway, session.session_id, frames, closed)


async def _open_poll(
    gateway: Gateway, request: web.Request
) -> web.Response | tuple[ClientSession, PollChannel]:
    """A poll session's open (traced and timed like a WebSocket handshake, up to its first
    answer's wait): a refusal, or the session and its channel."""
    started = time.perf_counter()
    try:
        with tracing.span(tracing.ADMISSION_SPAN):
            admission = await gateway.gatekeeper.admit(head_of(request), "poll")
    except Refusal as refusal:
        gateway.metrics.handshakes[refusal.reason] += 1
        tracing.annotate(outcome=refusal.reason)
        return _refused(refusal)
    gateway.metrics.handshakes["accepted"] += 1
    start = await start_session(gateway, request.headers, admission, v1=True)
    channel = PollChannel(POLL_BUFFER, gateway.settings.poll_buffer_bytes)
    session = await open_session(gateway, admission, channel, "poll", start)
    note_edge(gateway.table, session.connection_id, request.headers)
    channel.session = session
    channel.on_closed = functools.partial(
        _remember_close, gateway, session.session_id, session.user_id
    )
    channel.opening = False
    gateway.metrics.observe_handshake("poll", time.perf_counter() - started)
    tracing.annotate(
        outcome="accepted", connection_id=session.connection_id, session_id=session.session_id
    )
    return session, channel


# -- client -> server for SSE and poll -----------------------------------------------------


def _post_limits(gateway: Gateway) -> PostLimits:
    settings = gateway.settings
    return PostLimits(
        # a body always has room for one message of the maximum size, in a list
        max_body_bytes=max(settings.post_max_bytes, settings.max_message_bytes + 2),
        max_frames=settings.post_max_frames,
        max_frame_bytes=settings.max_message_bytes,
    )


async def _read_body(request: web.Request, limits: PostLimits) -> bytes:
    """The body, read no further than the limit (a body without a length too)."""
    limits.check_length(request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limits.max_body_bytes:
            limits.check_length(size)  # raises
        chunks.append(chunk)
    return b"".join(chunks)


async def handle_send(request: web.Request) -> web.Response:
    """A POST of frames: refused whole (413, 429, 400) before anything is handed on, or
    handed on frame by frame like a WebSocket's (202 with how many were accepted)."""
    gateway = request.app[GATEWAY_KEY]
    try:
        identity, _ = gateway.gatekeeper.authenticate(head_of(request), request.query)
    except Refusal as refusal:
        return _refused(refusal)
    session = gateway.table.by_session.get(request.query.get("session", ""))
    if not isinstance(session, ClientSession) or not isinstance(
        session.channel, SseChannel | PollChannel
    ):
        return _refused(
            Refusal(409, "session_not_here", "no such session on this pod: reconnect to resume it")
        )
    if session.user_id != identity.user_id:
        return _refused(Refusal(403, "not_your_session", "this session belongs to another user"))
    limits = _post_limits(gateway)
    try:
        frames = read_post(await _read_body(request, limits), limits, session.core, _now())
    except OverRate as refused:  # with --rate-limit-action close: 1008, as a WebSocket's
        if session.core.closing is None:
            return _rate_limited(refused.message)
        await session.close(*session.core.closing)
        return _refused(Refusal(refused.status, refused.error, refused.message))
    except FrameTooBig as refused:  # as a WebSocket's too big a message: 1009
        await session.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
        return _refused(Refusal(refused.status, refused.error, refused.message))
    except PostRefused as refused:
        return _refused(Refusal(refused.status, refused.error, refused.message))
    accepted = 0
    for frame in frames:
        if not await session.from_client(frame.text, False, counted=True, value=frame.value):
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
