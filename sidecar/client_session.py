"""One client session on this pod, whatever its transport (WebSocket, SSE, long polling).

The transport supplies a :class:`Channel` (how to put a frame on the wire, close,
ping); everything else is here, once: the bounded send queue and the slow-consumer
cut, per-connection limits, protocol v1 sequence numbers with persist-then-send to
the replay buffer, resume with replay, duplicate detection of client messages,
and the hand-off of client messages to the backend.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from sidecar.admission import Admission
from sidecar.auth import AuthError, Identity
from sidecar.backend_bridge import BackendLink, SessionInfo
from sidecar.channel_service import SessionChannels, claimed_channels, token_patterns
from sidecar.core import CloseCode, backend_close, envelope
from sidecar.core.channel_frames import ChannelRequest, PublicationBatch, PublicationFrames
from sidecar.core.resume import ResumePlan, Sequencer, Start, plan_replay, plan_start
from sidecar.core.session import UNPARSED, Entry, SessionCore
from sidecar.core.token_life import TOKEN_EXPIRED, TokenRefused
from sidecar.gateway import Gateway
from sidecar.replay_store import ReplayStoreUnavailable

log = structlog.get_logger()

CLOSE_TIMEOUT_S = 2.0


class Channel(Protocol):
    """How one transport puts frames on the wire."""

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        """Write one frame (v1 frames are JSON text; ``seq`` is 0 when unnumbered; ``wire``:
        the whole WebSocket frame, made once for many sessions, when there is one).

        None: written (or buffered) at once. An awaitable: the write, or the room for the
        next one, must be awaited before anything else is written. Raises
        ``ConnectionError`` when the client is gone."""

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...

    def ping(self) -> None: ...

    def written_to(self) -> bool:
        """Whether frames were written to the client since this was last asked (the
        WebSocket's heartbeats; False for the HTTP transports)."""

    def idle_for(self, now: float) -> float:
        """Seconds since the client last showed up (long polling); 0 for streams."""

    @property
    def takes_wire(self) -> bool:
        """Whether :meth:`write` writes ``wire`` (whole WebSocket frames) as it is."""


class ClientSession:
    """A client connection as the gateway sees it; the backend's ``SessionSink``.

    The rules live in :class:`SessionCore`; this moves bytes. Frames the core clears are
    written at once, in the call that cleared them (a backend batch, a persist
    watermark, a client frame): no task and no timer per message. Only a write that
    must be awaited (a full socket buffer, SSE, a long-poll buffer the client is not
    emptying) starts a writer task, which lives until the backlog is written.
    """

    __slots__ = (
        "_asked",
        "_closing",
        "_gateway",
        "_writing",
        "channel",
        "channel_patterns",
        "channels",
        "close_code",
        "connection_id",
        "core",
        "link",
        "resumed",
        "routing_key",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        gateway: Gateway,
        admission: Admission,
        channel: Channel,
        transport: str,
        session_id: str,
        sequencer: Sequencer | None,
        backend_last_id: int = 0,
        resumed: bool = False,
    ) -> None:
        self.connection_id = admission.connection_id
        self.user_id = admission.identity.user_id
        self.routing_key = admission.routing_key
        self.transport = transport
        self.link: BackendLink = admission.link
        self.channel = channel
        self.core = SessionCore(
            session_id,
            sequencer,  # None: a raw WebSocket (no envelopes, no resume)
            gateway.metrics.counters,
            gateway.queue_bounds,
            gateway.new_limits,
            backend_last_id,
            admission.identity.expires_at,
        )
        self.close_code: int | None = None
        self.resumed = resumed
        self.channels: SessionChannels | None = None  # made when it first uses a channel
        self.channel_patterns: re.Pattern[str] | None = token_patterns(
            claimed_channels(admission.identity.claims, "channels")
        )
        self._gateway = gateway
        self._writing: asyncio.Future[None] | None = None  # a write in progress
        self._closing: asyncio.Task[None] | None = None
        self._asked: dict[int, ChannelRequest] | None = None  # publications the backend judges

    @property
    def session_id(self) -> str:
        return self.core.session_id

    @property
    def backend_last_id(self) -> int:
        return self.core.backend_last_id

    # -- backend -> client ---------------------------------------------------------

    def deliver(
        self, data: bytes, binary: bool, droppable: bool, coalesce_key: str, message_id: int = 0
    ) -> None:
        if self.close_code is not None:
            return
        now = asyncio.get_running_loop().time()
        entry = self.core.backend_message(data, binary, droppable, coalesce_key, message_id, now)
        if entry is not None:
            self._gateway.replay.persist(self, entry)
        self._pump()

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> None:
        """How this session's replay writes went (once per batch: a watermark)."""
        durable_id = self.core.persisted(upto_seq, message_id, durable)
        if durable_id:
            self.link.persisted(self.session_id, durable_id)
        self._pump()

    # -- channels ----------------------------------------------------------------------

    @property
    def speaks_v1(self) -> bool:
        return self.core.sequencer is not None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def publication(self, frames: PublicationFrames) -> None:
        """A channel's publication: straight to the socket when nothing waits before it
        (the frames shared by every subscriber, no queue entry, no clock read), else
        through the send queue like any message."""
        if self.close_code is not None:
            return
        core = self.core
        if self._writing is None and core.clear_to_send():
            if core.sequencer is None:
                data, binary, wire = (
                    frames.publication.data,
                    frames.publication.binary,
                    frames.raw_websocket,
                )
            else:
                data, binary, wire = frames.v1, False, frames.v1_websocket
            core.sent(len(data))
            try:
                pending = self.channel.write(data, binary, 0, wire)
            except (ConnectionError, RuntimeError):
                return  # the client is gone: the transport's reader ends the session
            if pending is not None:
                self._writing = asyncio.ensure_future(self._write_backlog(pending))
            return
        core.publication(frames, self.now())
        self._pump()

    def publications(self, batch: PublicationBatch) -> None:
        """Several publications of one channel: in one write when nothing waits before
        them and the socket takes whole frames (their frames joined once for every
        subscriber), else one by one."""
        if self.close_code is not None:
            return
        core = self.core
        if self._writing is None and self.channel.takes_wire and core.clear_to_send():
            v1 = core.sequencer is not None
            wire = batch.v1_websocket if v1 else batch.raw_websocket
            core.sent(batch.data_bytes(v1), len(batch))
            try:
                pending = self.channel.write(wire, False, 0, wire)
            except (ConnectionError, RuntimeError):
                return
            if pending is not None:
                self._writing = asyncio.ensure_future(self._write_backlog(pending))
            return
        for frames in batch.frames:
            self.publication(frames)

    def channel_frame(self, frame: bytes) -> None:
        if self.close_code is None and self.core.sequencer is not None:
            self.core.answer(frame, self.now())
            self._pump()

    def channel_left(self, channel: str) -> None:
        self._gateway.channels.channel_left(self, channel)

    def grant(self, channel: str, granted: bool) -> None:
        if self.core.sequencer is not None:
            self._gateway.replay.grant(self.session_id, channel, granted)

    def ask_backend(self, request: ChannelRequest) -> bool:
        """A client's publication, to the backend for approval (its answer comes back
        through :meth:`publication_decided`)."""
        if not self.link.ask_publication(self.session_id, self.user_id, request):
            return False
        if self._asked is None:
            self._asked = {}
        self._asked[request.request_id] = request
        return True

    def publication_decided(
        self, request_id: int, accept: bool, data: bytes | None, binary: bool, reason: str
    ) -> None:
        request = self._asked.pop(request_id, None) if self._asked else None
        if request is not None:
            self._gateway.channels.decided(self, request, accept, data, binary, reason)

    def subscribe_requested(self, channel: str) -> None:
        """The backend subscribes this session."""
        self._gateway.channels.subscribe_soon(self, channel)

    def unsubscribe_requested(self, channel: str) -> None:
        self._gateway.channels.unsubscribe_server(self, channel)

    def _pump(self) -> None:
        """Write what the core has cleared; act on its close decision."""
        if self._writing is None:
            try:
                pending = self._write_cleared()
            except (ConnectionError, RuntimeError):
                pending = None  # the client is gone: the transport's reader ends the session
            if pending is not None:
                self._writing = asyncio.ensure_future(self._write_backlog(pending))
        if self.core.closing is not None:
            self.cut(*self.core.closing)

    def _write_cleared(self) -> Awaitable[None] | None:
        core, channel = self.core, self.channel
        while self.close_code is None and (frame := core.next_frame()) is not None:
            pending = channel.write(frame.data, frame.binary, frame.seq, frame.wire)
            if pending is not None:
                return pending
        return None

    async def _write_backlog(self, pending: Awaitable[None] | None) -> None:
        grace = self._gateway.settings.slow_consumer_grace_s
        try:
            while pending is not None:
                async with asyncio.timeout(grace):
                    await pending
                pending = self._write_cleared()
        except TimeoutError:
            self.core.send_stalled()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._writing = None
        if self.core.closing is not None:
            self.cut(*self.core.closing)

    def queued(self) -> tuple[int, int]:
        return self.core.queued()

    def close_requested(self, code: int, reason: str) -> None:
        """The backend ends the session (its code checked: only codes a server may send)."""
        self.cut(*backend_close(code, reason))

    def rebind(self, link: BackendLink) -> None:
        self.link = link

    def session_info(self) -> SessionInfo:
        return SessionInfo(
            self.session_id, self.user_id, self.routing_key, self.transport, self._gateway.pod_id
        )

    # -- client -> backend ---------------------------------------------------------

    async def from_client(
        self, data: bytes, binary: bool, counted: bool = False, value: object = UNPARSED
    ) -> bool:
        """Hand a client message on; False once the session is closing. ``counted``: its
        POST's frames were counted against the limits together (``core.client_batch``);
        ``value``: its JSON value, parsed as the POST was split."""
        core = self.core
        now = asyncio.get_running_loop().time()
        # an expired token sends nothing more: the session closes (4401) instead
        expired = core.token_expired(time.time())
        message = None if expired else core.client_frame(data, binary, now, counted, value)
        if isinstance(message, ChannelRequest):
            await self._gateway.channels.request(self, message)
            self._pump()
        elif message is not None and message.cseq == envelope.REFRESH_CSEQ:
            self._refresh(message.data.decode("ascii"), now)
            self._pump()
        elif message is not None:
            if message.cseq:
                self._gateway.replay.record_cseq(core.session_id, message.cseq)
            await self.link.send(core.session_id, message.data, message.binary, message.cseq)
        elif core.closing is not None:
            await self.close(*core.closing)
            return False
        else:  # a pong or a notice may be waiting
            self._pump()
        return True

    def _refresh(self, token: str, now: float) -> None:
        """A refresh frame: the token verified here, what it does decided by the core."""
        verified: Identity | TokenRefused
        try:
            verified = self._gateway.verifier.verify(token)
        except AuthError as refused:
            verified = TokenRefused(refused.reason)
        self.core.refresh(self.user_id, verified, now)

    def expire_token(self, wall_now: float) -> bool:
        """Close the session (4401) if its token has expired; whether it did. (A session
        that sends is checked at each frame: this finds the silent ones.)"""
        if not self.core.token_expired(wall_now):
            return False
        self.cut(*TOKEN_EXPIRED)
        return True

    # -- opening -------------------------------------------------------------------------

    async def greet(self, frames: Iterable[tuple[bytes, int]]) -> None:
        """Write the welcome and the replay (frame, seq) before anything else: what comes
        meanwhile (backend messages, publications, answers) waits in the send queue, as
        behind any write in progress. Each write has the slow-consumer grace (then 1013);
        a client gone is aborted. Either way the session is then closing."""
        self._writing = holding = asyncio.get_running_loop().create_future()
        grace = self._gateway.settings.slow_consumer_grace_s
        try:
            for frame, seq in frames:
                if self.close_code is not None:  # closed meanwhile (a drain, the backend)
                    break
                pending = self.channel.write(frame, False, seq)
                if pending is not None:
                    async with asyncio.timeout(grace):
                        await pending
        except TimeoutError:
            self.core.send_stalled()
        except (ConnectionError, RuntimeError):
            self.abort()
        finally:
            self._writing = None
            holding.set_result(None)
        self._pump()

    @property
    def ended(self) -> bool:
        """Whether the session is closed or closing."""
        return self.close_code is not None or self.core.closing is not None

    # -- liveness and closing ----------------------------------------------------------

    def send_ping(self) -> None:
        self.channel.ping()

    def written_to(self) -> bool:
        return self.channel.written_to()

    def idle_for(self, now: float) -> float:
        return self.channel.idle_for(now)

    def cut(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.channel.close(code, reason)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL
        self.channel.abort()

    def finish(self) -> None:
        """The transport is done: tell the backend, leave the gateway and the registry.
        (Once is enough: a second call finds nothing left to do.)"""
        decided = self.core.closing
        code = self.close_code or (decided[0] if decided else CloseCode.ABNORMAL)
        self.close_code = code
        self.link.close(self.session_id, code, "client gone")
        self._gateway.channels.leave_all(self)
        self._gateway.table.untrack(self, code)


@dataclass(slots=True)
class SessionStart:
    """Where a session starts: read from (or written to) the replay store before the
    upgrade, so that once the client is answered nothing waits before the welcome."""

    session_id: str
    sequencer: Sequencer | None  # None: a raw WebSocket (no envelopes, no resume)
    resumed: bool = False
    plan: ResumePlan | None = None
    entries: list[Entry] = field(default_factory=list)  # to replay after the welcome
    backend_last_id: int = 0
    granted: frozenset[str] = frozenset()  # channels the server subscribed it to


async def start_session(
    gateway: Gateway, headers: Mapping[str, str], admission: Admission, v1: bool
) -> SessionStart:
    """A new session, or (v1, ``?session=&last_seq=``) the one the client resumes with the
    messages it missed. This reads and writes the replay store and carries out the plan
    that :func:`plan_start` and :func:`plan_replay` decide. Replay store errors are counted,
    never refused: a session the store cannot vouch for starts afresh (``resync``)."""
    if not v1:
        return SessionStart(admission.connection_id, None)
    requested = admission.query.get("session")
    last_seq = admission.query.get("last_seq") or headers.get("Last-Event-ID")
    stored, reachable = None, True
    if requested:
        try:
            stored = await gateway.replay_store.load(requested)
        except ReplayStoreUnavailable:
            gateway.metrics.registry_errors.inc()
            reachable = False
    user_id = admission.identity.user_id
    plan = plan_start(bool(requested), stored, reachable, user_id, _int(last_seq))
    if stored is None or plan.start is Start.NEW:  # (no record: always NEW)
        start = SessionStart(admission.connection_id, Sequencer(), plan=plan)
        gateway.replay.create(start.session_id, user_id)  # with the writer's next batch
        return start
    start = SessionStart(
        stored.session_id,
        Sequencer(next_seq=stored.last_seq + 1, last_cseq=stored.last_cseq),
        resumed=True,
        plan=plan,
        backend_last_id=stored.backend_last_id,
        granted=stored.granted,
    )
    if plan.replays:
        entries: list[Entry] | None
        try:
            entries = await gateway.replay_store.entries(
                start.session_id, plan.replay_after, plan.replay_upto
            )
        except ReplayStoreUnavailable:
            gateway.metrics.registry_errors.inc()
            entries = None
        start.plan = plan_replay(plan, None if entries is None else [e.seq for e in entries])
        if entries is not None and not start.plan.resync:
            start.entries = entries
    return start


async def open_session(
    gateway: Gateway,
    admission: Admission,
    channel: Channel,
    transport: str,
    start: SessionStart,
) -> ClientSession:
    """Open a started session on its channel: tracking, backend link, welcome + replay
    (v1), the token's subscriptions.

    The session is in the connection table (heartbeats, token expiry, drain) before any
    write that can wait, and its cleanup always runs: a client that is gone, stalls past the
    slow-consumer grace or is closed while it opens, or any error, leaves no registry
    record and no backend session behind (the session is finished here; the transport's
    own ``finish`` after it does nothing more). The welcome is the first frame written
    (nothing is awaited before it); what the backend sends meanwhile waits behind the
    welcome and the replay, numbered after them. Returns the session, maybe closed
    already: the transport's loop then ends at once."""
    settings = gateway.settings
    session_id, sequencer, plan = start.session_id, start.sequencer, start.plan
    session = ClientSession(
        gateway,
        admission,
        channel,
        transport,
        session_id,
        sequencer,
        start.backend_last_id,
        start.resumed,
    )
    if start.granted:
        session.channels = SessionChannels()
        session.channels.granted.update(start.granted)
    gateway.table.track(session)
    try:
        session.link.open(session, resumed=start.resumed, last_message_id=start.backend_last_id)
        if sequencer is not None:
            hello = envelope.welcome(
                session_id,
                sequencer.last_seq,
                start.resumed,
                len(start.entries),
                bool(plan and plan.resync),
                transport,
                settings.pod_id,
                sequencer.last_cseq,
            )
            replay = (  # each frame made when it is written
                (envelope.message(entry.seq, entry.data, entry.binary), entry.seq)
                for entry in start.entries
            )
            await session.greet(itertools.chain([(hello.encode(), 0)], replay))
            if start.entries:
                gateway.metrics.replayed.inc(len(start.entries))
        # the token's server-side subscriptions (raw WebSockets too)
        for name in claimed_channels(admission.identity.claims, "subs"):
            if session.ended:
                break
            await gateway.channels.subscribe_server(session, name)
    except BaseException:
        session.abort()
        session.finish()
        raise
    if session.ended:  # gone or cut while it opened
        session.finish()
    log.debug(
        "session_opened",
        connection_id=session.connection_id,
        session_id=session_id,
        user_id=session.user_id,
        transport=transport,
        resumed=start.resumed,
        start=plan.reason if plan else None,  # why it resumed, resyncs or is new
    )
    return session


def _int(text: str | None) -> int:
    try:
        return max(0, int(text)) if text else 0
    except ValueError:
        return 0


__all__ = ["Channel", "ClientSession", "SessionStart", "open_session", "start_session"]
