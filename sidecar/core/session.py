"""The rules of one client session, with no sockets and no event loop.

Events in, decisions out:

- :meth:`SessionCore.client_frame`: a frame from the client. Counted against the
  connection's limits (every frame: messages, pings, bad frames); in protocol v1 parsed,
  answered (pings), refused (a bad-frame budget, then 1007) or dropped (duplicates).
  Returns what to forward to the backend, with the client sequence number to record.
- :meth:`SessionCore.backend_message`: a message for the client. Numbered (v1) and
  queued; returns the :class:`Entry` to keep in the replay buffer before it is sent.
- :meth:`SessionCore.persisted`: how far the replay buffer has persisted (a watermark
  per batch); returns the backend message id that is now durable, to acknowledge.
- :meth:`SessionCore.send_stalled`: one write has not completed for the slow-consumer
  grace period.
- :meth:`SessionCore.token_expired`: the wall clock against the token's ``exp``, checked
  before every client frame (and by the keep-alive sweep for sessions that stay silent):
  an expired token sends nothing more, it closes the session (4401).
- :meth:`SessionCore.refresh`: a refresh frame's token, verified by the transport: the
  expiry moves on or not (:mod:`sidecar.core.token_life`), and the client is told.

:meth:`SessionCore.next_frame` hands out the next frame cleared to go (persist, then
send), and :attr:`SessionCore.closing` says when and how the session must end. Nothing
here awaits: the transport writes what it is handed and reports back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sidecar.core import envelope, token_life
from sidecar.core.channel_frames import ChannelRequest, PublicationFrames, Refused
from sidecar.core.close_codes import CloseCode
from sidecar.core.rate_limit import InboundLimits, InboundVerdict, TokenBucket
from sidecar.core.resume import Sequencer
from sidecar.core.send_queue import Outgoing, PushResult, SendQueue

BAD_FRAME_BURST = 10.0  # frames that are not v1 a client may send in a row ...
BAD_FRAMES_PER_S = 1.0  # ... and after that, one a second; beyond: close 1007
PONG = envelope.pong().encode()
UNPARSED = object()  # client_frame's ``value`` when the frame is still text


class Entry(NamedTuple):
    """A message kept in a session's replay buffer (protocol v1). A named tuple: one is
    made per message, in a third of a frozen dataclass's time."""

    session_id: str
    seq: int
    data: bytes
    binary: bool
    message_id: int = 0  # the backend's id for it (0: none), acknowledged once durable


@dataclass(frozen=True, slots=True)
class QueueBounds:
    """The send queue's bounds (see :class:`SendQueue`)."""

    messages: int
    bytes: int
    slow_consumer_grace_s: float


class SessionCounters:
    """What every session of a pod did, as plain integers read at scrape time: the hot
    path takes no lock and creates nothing to count."""

    __slots__ = (
        "bad_frame_closes",
        "bytes_in",
        "bytes_out",
        "coalesced",
        "duplicates",
        "messages_in",
        "messages_out",
        "rate_limited_closes",
        "rate_limited_drops",
        "shed",
    )

    def __init__(self) -> None:
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0
        self.shed = self.coalesced = self.duplicates = 0
        self.rate_limited_drops = self.rate_limited_closes = self.bad_frame_closes = 0


class SessionCore:
    """One session's sequencing, duplicate detection, persist gating, limits, notices and
    close decisions. ``sequencer`` None: a raw WebSocket (no envelopes, no replay)."""

    __slots__ = (
        "_bad_frames",
        "_bounds",
        "_counters",
        "_limits",
        "_new_limits",
        "_queue",
        "backend_last_id",
        "closing",
        "persisted_upto",
        "sequencer",
        "session_id",
        "token_expires_at",
    )

    def __init__(
        self,
        session_id: str,
        sequencer: Sequencer | None,
        counters: SessionCounters,
        bounds: QueueBounds,
        limits: Callable[[], InboundLimits | None] | None = None,
        backend_last_id: int = 0,
        token_expires_at: float = math.inf,
    ) -> None:
        self.session_id = session_id
        self.token_expires_at = token_expires_at  # Unix seconds (a refresh moves it on)
        self.sequencer = sequencer
        self.backend_last_id = backend_last_id
        self.persisted_upto = sequencer.last_seq if sequencer else 0
        self.closing: tuple[int, str] | None = None  # the first close decided wins
        self._counters = counters
        self._bounds = bounds
        self._new_limits = limits  # made at the first client frame: idle sessions pay nothing
        self._limits: InboundLimits | None = None
        self._queue: SendQueue | None = None  # made at the first frame for the client
        self._bad_frames: TokenBucket | None = None  # made at the first bad frame

    # -- client -> backend -------------------------------------------------------------

    def client_frame(
        self,
        data: bytes,
        binary: bool,
        now: float,
        counted: bool = False,
        value: object = UNPARSED,
    ) -> envelope.ClientMessage | ChannelRequest | None:
        """What to forward to the backend (``cseq`` > 0: record it), a token refresh to
        verify (``cseq`` is ``envelope.REFRESH_CSEQ``, ``data`` the token), a channel
        request for the transport to carry out, or None. ``counted``: the frame was
        counted against the limits already, with the others of its POST
        (:meth:`client_batch`); ``value``: its JSON value, parsed as the POST was split
        (not parsed again)."""
        counters = self._counters
        counters.messages_in += 1
        counters.bytes_in += len(data)
        if self.closing is not None:
            return None
        if not counted:
            verdict = self._count(len(data), now)
            if verdict is InboundVerdict.CLOSE:
                return None
            if verdict is InboundVerdict.DROP:
                self.notice("rate_limited", now)
                return None
        if self.sequencer is None:
            return envelope.ClientMessage(0, data, binary)
        try:
            parsed = (
                envelope.parse_client(data.decode("utf-8", errors="replace"))
                if value is UNPARSED
                else envelope.read_client(value)
            )
        except (envelope.EnvelopeError, Refused) as exc:
            if not self._bad_frame_allowed(now):
                counters.bad_frame_closes += 1
                self._close(CloseCode.INVALID_PAYLOAD, "too many bad frames")
            elif isinstance(exc, Refused):
                self.answer(exc.frame(), now)
            else:
                self.notice(f"bad_frame: {exc}", now)
            return None
        if isinstance(parsed, ChannelRequest):
            return parsed
        if parsed.cseq == envelope.PING_CSEQ:  # pongs queued meanwhile coalesce
            self._push(Outgoing(PONG, False, True, "pong"), now)
            return None
        if parsed.cseq == envelope.REFRESH_CSEQ:  # a new token: the transport verifies it
            return parsed
        if not self.sequencer.accept_client(parsed.cseq):
            counters.duplicates += 1
            return None
        return parsed

    def client_batch(self, count: int, size: int, now: float, may_close: bool = True) -> bool:
        """``count`` client frames of ``size`` bytes in all that arrive together (a POST's
        body: its bytes before it is parsed, then its frames; a poll: one frame of no
        bytes), counted against the connection's limits once, all or nothing: a POST's
        frames then go to :meth:`client_frame` with ``counted=True``. False: over a
        limit, nothing counted; with ``rate_limit_action=close`` (and ``may_close``) the
        session is closing (1008, :attr:`closing`)."""
        return self._count(size, now, count, may_close) is InboundVerdict.ALLOW

    def token_expired(self, wall_now: float) -> bool:
        """Whether the token has expired at ``wall_now`` (Unix seconds); if so the session
        closes (4401, the first close decided wins) and takes no more client frames."""
        if wall_now < self.token_expires_at:  # from its exp on, a token has expired
            return False
        self._close(*token_life.TOKEN_EXPIRED)
        return True

    def refresh(
        self,
        session_user: str,
        token: token_life.TokenIdentity | token_life.TokenRefused,
        now: float,
    ) -> token_life.RefreshVerdict:
        """A refresh frame's token, as the transport's verifier saw it: the session's
        expiry moves on (or not, see :func:`~sidecar.core.token_life.judge_refresh`) and
        the client gets a notice saying which."""
        verdict = token_life.judge_refresh(session_user, self.token_expires_at, token)
        self.token_expires_at = verdict.expires_at
        self.notice(verdict.notice, now)
        return verdict

    def control_frame(self, size: int, now: float) -> bool:
        """A WebSocket ping or pong from the client (``size``: its payload), counted
        against the connection's limits like any frame: a ping costs a pong write and a
        turn of the loop. True: answer it (a ping), take it as liveness (a pong). False:
        over the limit: not answered; with ``rate_limit_action=close`` the session is
        closing (1008, :attr:`closing`), with ``drop`` it is ignored."""
        if self.closing is not None:
            return False
        return self._count(size, now) is InboundVerdict.ALLOW

    def _count(
        self, size: int, now: float, count: int = 1, may_close: bool = True
    ) -> InboundVerdict:
        """Every client frame's one count against the connection's limits (data frames,
        a POST's frames together, pings and pongs): the verdict, counted; past a limit
        with ``rate_limit_action=close`` (and ``may_close``) the session is closing (1008),
        else the frames are dropped (DROP)."""
        if self._new_limits is not None:
            self._limits, self._new_limits = self._new_limits(), None
        if self._limits is None:
            return InboundVerdict.ALLOW
        verdict = self._limits.check(size, now, count)
        if verdict is InboundVerdict.CLOSE and may_close:
            self._counters.rate_limited_closes += 1
            self._close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return verdict
        if verdict is not InboundVerdict.ALLOW:
            self._counters.rate_limited_drops += 1
            return InboundVerdict.DROP
        return verdict

    def _bad_frame_allowed(self, now: float) -> bool:
        if self._bad_frames is None:
            self._bad_frames = TokenBucket(BAD_FRAMES_PER_S, BAD_FRAME_BURST)
        return self._bad_frames.take(1, now)

    def notice(self, reason: str, now: float) -> None:
        """Tell the client something: notices of a kind coalesce, and are shed first when
        the client reads slowly."""
        text = envelope.notice(reason).encode()
        self._push(Outgoing(text, False, True, "notice:" + reason.split(":")[0]), now)

    def answer(self, frame: bytes, now: float) -> None:
        """A frame that must reach the client (a channel request's answer, ``subscribed``,
        ``unsubscribed``): never shed, never coalesced; unnumbered."""
        self._push(Outgoing(frame, False), now)

    # -- backend -> client -------------------------------------------------------------

    def backend_message(
        self,
        data: bytes,
        binary: bool,
        droppable: bool,
        coalesce_key: str,
        message_id: int,
        now: float,
    ) -> Entry | None:
        """Queue a message for the client; in v1, the entry to persist before it goes."""
        if self.closing is not None:
            return None
        if self.sequencer is None:
            self._push(Outgoing(data, binary, droppable, coalesce_key or None), now)
            return None
        seq = self.sequencer.assign()
        frame = envelope.message(seq, data, binary)
        self._push(Outgoing(frame, False, droppable, coalesce_key or None, seq), now)
        return Entry(self.session_id, seq, data, binary, message_id)

    def clear_to_send(self) -> bool:
        """Whether a frame may go to the client at once, past the queue: nothing waits
        before it and the session is not closing (the fan-out's fast path)."""
        return self.closing is None and not self._queue

    def sent(self, size: int, count: int = 1) -> None:
        """Frames went out past the queue (see :meth:`clear_to_send`)."""
        counters = self._counters
        counters.messages_out += count
        counters.bytes_out += size

    def publication(self, frames: PublicationFrames, now: float) -> None:
        """A channel's publication for the client: the frames made once for every
        subscriber (a raw WebSocket gets the bare data), queued like any message (a slow
        subscriber meets the send queue's rules); not numbered, not kept in the replay
        buffer: the channel's history is where it is recovered from."""
        if self.closing is not None:
            return
        if self.sequencer is None:
            p = frames.publication
            self._push(Outgoing(p.data, p.binary, wire=frames.raw_websocket), now)
        else:
            self._push(Outgoing(frames.v1, False, wire=frames.v1_websocket), now)

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> int:
        """The replay buffer holds entries up to ``upto_seq`` (True), refused them because
        the session lives on another pod now (False), or is unreachable (None: delivery
        goes on without a replay copy). Returns the backend id now durable, or 0."""
        if durable is False:
            self._close(CloseCode.TRY_AGAIN_LATER, "session moved")
            return 0
        self.persisted_upto = max(self.persisted_upto, upto_seq)
        if durable and message_id > self.backend_last_id:
            self.backend_last_id = message_id
            return message_id
        return 0

    def next_frame(self) -> Outgoing | None:
        """The next frame to write, or None: nothing queued, the next one not persisted
        yet (persist, then send), or the session closing."""
        queue = self._queue
        if queue is None or self.closing is not None:
            return None
        frame = queue.peek()
        if frame is None or frame.seq > self.persisted_upto:
            return None
        queue.pop()
        self._counters.messages_out += 1
        self._counters.bytes_out += len(frame.data)
        return frame

    def send_stalled(self) -> None:
        """A write has not completed for the grace period: the client is not reading."""
        self._close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def queued(self) -> tuple[int, int]:
        """Messages and bytes waiting for the client."""
        return (len(self._queue), self._queue.bytes_queued) if self._queue else (0, 0)

    def _push(self, frame: Outgoing, now: float) -> None:
        queue = self._queue
        if queue is None:
            bounds = self._bounds
            queue = self._queue = SendQueue(
                bounds.messages, bounds.bytes, bounds.slow_consumer_grace_s
            )
        result = queue.push(frame, now)
        if result is not PushResult.QUEUED:
            counters = self._counters
            if result is PushResult.COALESCED:
                counters.coalesced += 1
            elif result is not PushResult.OVER_LIMIT:
                counters.shed += 1
        if queue.verdict(now) is not None:
            self._close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def _close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)


__all__ = ["Entry", "QueueBounds", "SessionCore", "SessionCounters"]
