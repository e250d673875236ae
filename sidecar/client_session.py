"""One client session on this pod, whatever its transport (WebSocket, SSE, long polling).

The transport supplies a :class:`Channel` (how to put a frame on the wire, close,
ping); everything else is here, once: the bounded send queue and the slow-consumer
cut, per-connection limits, protocol v1 sequence numbers with persist-then-send to
the replay buffer, resume with replay, duplicate detection of client messages,
and the hand-off of client messages to the backend.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

import structlog
from aiohttp import web

from sidecar.backend_bridge import BackendLink, SessionInfo
from sidecar.core import (
    CloseCode,
    InboundVerdict,
    Outgoing,
    PushResult,
    SendQueue,
    TokenBucket,
    backend_close,
    envelope,
)
from sidecar.core.resume import ResumePlan, Sequencer, plan_resume
from sidecar.gateway import Admission, Gateway
from sidecar.replay_store import Entry, ReplayStoreUnavailable

log = structlog.get_logger()

CLOSE_TIMEOUT_S = 2.0
BAD_FRAME_BURST = 10.0  # frames that are not v1 a client may send in a row ...
BAD_FRAMES_PER_S = 1.0  # ... and after that, one a second; beyond: close 1007
PONG = envelope.pong().encode()


class Channel(Protocol):
    """How one transport puts frames on the wire."""

    async def send(self, frame: bytes, binary: bool, seq: int) -> None:
        """Write one frame (v1 frames are JSON text; ``seq`` is 0 when unnumbered)."""

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...

    def ping(self) -> None: ...

    def idle_for(self, now: float) -> float:
        """Seconds since the client last showed up (long polling); 0 for streams."""


class ClientSession:
    """A client connection as the gateway sees it; the backend's ``SessionSink``."""

    __slots__ = (
        "_bad_frames",
        "_closing",
        "_gateway",
        "_limits",
        "_persisted",
        "_queue",
        "_writer",
        "backend_last_id",
        "channel",
        "close_code",
        "connection_id",
        "link",
        "persisted_upto",
        "routing_key",
        "sequencer",
        "session_id",
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
    ) -> None:
        self.connection_id = admission.connection_id
        self.session_id = session_id
        self.user_id = admission.identity.user_id
        self.routing_key = admission.routing_key
        self.transport = transport
        self.link: BackendLink = admission.link
        self.channel = channel
        self.sequencer = sequencer  # None: a raw WebSocket (no envelopes, no resume)
        self.backend_last_id = backend_last_id
        self.persisted_upto = sequencer.last_seq if sequencer else 0
        self.close_code: int | None = None
        self._gateway = gateway
        self._queue: SendQueue | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._persisted: asyncio.Event | None = None
        self._limits = gateway.new_limits()
        self._bad_frames: TokenBucket | None = None  # made at the first bad frame

    @property
    def v1(self) -> bool:
        return self.sequencer is not None

    # -- backend -> client ---------------------------------------------------------

    def deliver(
        self, data: bytes, binary: bool, droppable: bool, coalesce_key: str, message_id: int = 0
    ) -> None:
        if self.close_code is not None:
            return
        if self.sequencer is not None:
            seq = self.sequencer.assign()
            frame = Outgoing(
                envelope.message(seq, data, binary),
                False,
                droppable,
                coalesce_key or None,
                seq,
            )
            self._gateway.replay.persist(
                self, Entry(self.session_id, seq, data, binary, message_id)
            )
        else:
            frame = Outgoing(data, binary, droppable, coalesce_key or None)
        self._enqueue(frame)

    def _enqueue(self, frame: Outgoing) -> None:
        """Queue a frame for the client (the one way out: bounded, shed, cut when stuck)."""
        gateway = self._gateway
        now = asyncio.get_running_loop().time()
        if self._queue is None:
            settings = gateway.settings
            self._queue = SendQueue(
                settings.send_queue_messages,
                settings.send_queue_bytes,
                settings.slow_consumer_grace_s,
            )
        result = self._queue.push(frame, now)
        if result in (PushResult.DROPPED, PushResult.SHED_OLDER):
            gateway.metrics.drops.labels("shed").inc()
        elif result is PushResult.COALESCED:
            gateway.metrics.drops.labels("coalesced").inc()
        verdict = self._queue.verdict(now)
        if verdict is not None:
            self.cut(verdict, "slow consumer")
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush())

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> None:
        """How this session's replay writes went (once per batch: a watermark)."""
        if durable is False:  # the session lives on another pod now
            self.cut(CloseCode.TRY_AGAIN_LATER, "session moved")
            return
        self.persisted_upto = max(self.persisted_upto, upto_seq)
        if durable and message_id > self.backend_last_id:
            self.backend_last_id = message_id
            self.link.persisted(self.session_id, message_id)
        if self._persisted is not None:
            self._persisted.set()

    async def _flush(self) -> None:
        queue = self._queue
        assert queue is not None
        traffic = self._gateway.metrics.traffic
        grace = self._gateway.settings.slow_consumer_grace_s
        while (message := queue.pop()) is not None and self.close_code is None:
            while message.seq and self.persisted_upto < message.seq:  # persist, then send
                self._persisted = asyncio.Event()
                await self._persisted.wait()
            try:
                async with asyncio.timeout(grace):  # a timer, not a task, per send
                    await self.channel.send(message.data, message.binary, message.seq)
            except TimeoutError:
                self.cut(CloseCode.TRY_AGAIN_LATER, "slow consumer")
                return
            except (ConnectionError, RuntimeError):
                return
            traffic.messages_out += 1
            traffic.bytes_out += len(message.data)

    def queued(self) -> tuple[int, int]:
        return (len(self._queue), self._queue.bytes_queued) if self._queue else (0, 0)

    def close_requested(self, code: int, reason: str) -> None:
        """The backend ends the session (its code checked: only codes a server may send)."""
        self.cut(*backend_close(code, reason))

    def rebind(self, link: BackendLink) -> None:
        self.link = link

    # -- client -> backend ---------------------------------------------------------

    async def from_client(self, data: bytes, binary: bool) -> bool:
        """Hand a client message on; False once the session is closing."""
        gateway = self._gateway
        metrics = gateway.metrics
        traffic = metrics.traffic
        traffic.messages_in += 1
        traffic.bytes_in += len(data)
        now = asyncio.get_running_loop().time()
        if self._limits is not None:  # every frame counts: messages, pings, bad frames
            verdict = self._limits.check(len(data), now)
            if verdict is InboundVerdict.CLOSE:
                metrics.rate_limited.labels("close").inc()
                await self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                return False
            if verdict is InboundVerdict.DROP:
                metrics.rate_limited.labels("drop").inc()
                self._notice("rate_limited")
                return True
        cseq = 0
        if self.sequencer is not None:
            try:
                parsed = envelope.parse_client(data.decode("utf-8", errors="replace"))
            except envelope.EnvelopeError as exc:
                if self._bad_frame_allowed(now):
                    self._notice(f"bad_frame: {exc}")
                    return True
                metrics.rate_limited.labels("bad_frames").inc()
                await self.close(CloseCode.INVALID_PAYLOAD, "too many bad frames")
                return False
            cseq, data, binary = parsed.cseq, parsed.data, parsed.binary
            if cseq < 0:  # an application-level ping: pongs queued meanwhile coalesce
                self._enqueue(Outgoing(PONG, False, True, "pong"))
                return True
            if not self.sequencer.accept_client(cseq):
                metrics.drops.labels("duplicate").inc()
                return True
            if cseq:
                gateway.replay.record_cseq(self.session_id, cseq)
        await self.link.send(self.session_id, data, binary, seq=cseq)
        return True

    def _bad_frame_allowed(self, now: float) -> bool:
        """Whether one more frame that is not v1 is within this client's budget."""
        if self._bad_frames is None:
            self._bad_frames = TokenBucket(BAD_FRAMES_PER_S, BAD_FRAME_BURST)
        return self._bad_frames.take(1, now)

    def _notice(self, reason: str) -> None:
        """Tell the client something, through the send queue: notices of a kind coalesce,
        and are shed first when the client reads slowly."""
        text = envelope.notice(reason).encode()
        self._enqueue(Outgoing(text, False, True, "notice:" + reason.split(":")[0]))

    # -- liveness and closing ----------------------------------------------------------

    def send_ping(self) -> None:
        self.channel.ping()

    def idle_for(self, now: float) -> float:
        return self.channel.idle_for(now)

    def cut(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        try:
            await asyncio.wait_for(self.channel.close(code, reason), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        if self.close_code is None:
            self.close_code = 1006
        self.channel.abort()

    def finish(self) -> None:
        """The transport is done: tell the backend, leave the gateway and the registry."""
        code = self.close_code or 1006
        self.close_code = code
        self.link.close(self.session_id, code, "client gone")
        self._gateway.untrack(self, code)


async def open_session(
    gateway: Gateway,
    request: web.Request,
    admission: Admission,
    channel: Channel,
    transport: str,
    v1: bool,
) -> ClientSession:
    """Start a session: new or resumed (v1), welcome + replay, backend link, tracking."""
    settings = gateway.settings
    resumed = False
    plan: ResumePlan | None = None
    sequencer: Sequencer | None = None
    backend_last_id = 0
    session_id = admission.connection_id
    if v1:
        sequencer = Sequencer()
        requested = request.query.get("session")
        client_last_seq = _int(
            request.query.get("last_seq") or request.headers.get("Last-Event-ID")
        )
        state = None
        if requested:
            try:
                state = await gateway.replay_store.load(requested)
            except ReplayStoreUnavailable:
                gateway.metrics.registry_errors.inc()
        if state is not None and state.user_id == admission.identity.user_id:
            session_id, resumed = requested or session_id, True
            sequencer = Sequencer(next_seq=state.last_seq + 1, last_cseq=state.last_cseq)
            backend_last_id = state.backend_last_id
            plan = plan_resume(client_last_seq, state.first_kept, state.last_seq)
        else:
            session_id = uuid.uuid4().hex
            if requested:  # asked to resume a session we do not have (expired, or not theirs)
                plan = ResumePlan(0, 0, resync=True)
            try:
                await gateway.replay_store.create(session_id, admission.identity.user_id)
            except ReplayStoreUnavailable:
                gateway.metrics.registry_errors.inc()
    session = ClientSession(
        gateway, admission, channel, transport, session_id, sequencer, backend_last_id
    )
    if sequencer is not None:
        entries: list[Entry] = []
        if plan is not None and plan.replays:
            try:
                entries = await gateway.replay_store.entries(
                    session_id, plan.replay_after, plan.replay_upto
                )
            except ReplayStoreUnavailable:
                gateway.metrics.registry_errors.inc()
                plan = ResumePlan(sequencer.last_seq, sequencer.last_seq, resync=True)
            if entries and entries[0].seq != plan.replay_after + 1:
                entries, plan = [], ResumePlan(sequencer.last_seq, sequencer.last_seq, resync=True)
        hello = envelope.welcome(
            session_id,
            sequencer.last_seq,
            resumed,
            len(entries),
            bool(plan and plan.resync),
            transport,
            settings.pod_id,
            sequencer.last_cseq,
        )
        await channel.send(hello.encode(), False, 0)
        for entry in entries:
            frame = envelope.message(entry.seq, entry.data, entry.binary)
            await channel.send(frame, False, entry.seq)
        if entries:
            gateway.metrics.replayed.inc(len(entries))
    # only now does the backend hear of the session: nothing it sends can overtake the
    # welcome and the replay
    session.link.open(
        SessionInfo(
            session_id=session_id,
            user_id=session.user_id,
            routing_key=session.routing_key,
            transport=transport,
            pod_id=settings.pod_id,
        ),
        session,
        resumed=resumed,
        last_message_id=backend_last_id,
    )
    gateway.track(session)
    log.debug(
        "session_opened",
        connection_id=session.connection_id,
        session_id=session_id,
        user_id=session.user_id,
        transport=transport,
        resumed=resumed,
    )
    return session


def _int(text: str | None) -> int:
    try:
        return max(0, int(text)) if text else 0
    except ValueError:
        return 0


__all__ = ["Channel", "ClientSession", "open_session"]
