"""Channels as this gateway's sessions use them: client requests (subscribe, unsubscribe,
publish, presence), server-side subscriptions (the token's ``subs``, the server API, the
backend), publications from clients and backends, and the server API's commands.

The decisions are :mod:`sidecar.core.channel_rules`'; the hub (:mod:`sidecar.channel_hub`)
holds the topics and delivers. A session pays for channels only once it uses them: its
:class:`SessionChannels` is made at its first channel request or subscription.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog

from sidecar.channel_hub import ChannelHub, Subscriber
from sidecar.core import channel_frames as frames
from sidecar.core.channel_frames import ChannelError, ChannelRequest, Refused, RequestKind
from sidecar.core.channel_rules import (
    ChannelLimits,
    PublishRoute,
    check_presence,
    check_publish,
    check_room,
    check_subscribe,
    presence_reads,
)
from sidecar.core.rate_limit import TokenBucket
from wsfleet.channels.batched import BatchedCalls
from wsfleet.channels.messages import Command
from wsfleet.channels.names import BadChannel, allowed_by, check_channel, compile_patterns
from wsfleet.channels.namespaces import NamespaceOptions
from wsfleet.channels.store import (
    ChannelStore,
    ChannelStoreUnavailable,
    Position,
    PublishRequest,
)

log = structlog.get_logger()


class SessionChannels:
    """One session's channels: those it holds, those the server granted it (it may
    subscribe to them again, e.g. after a resume), what awaits an answer."""

    __slots__ = ("granted", "held", "pending", "presence_reads")

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.granted: set[str] = set()
        self.pending = 0  # publications awaiting the store or the backend
        self.presence_reads: TokenBucket | None = None


class ChannelSession(Subscriber, Protocol):
    """What the service needs of a session, beyond what the hub does."""

    connection_id: str
    channels: SessionChannels | None
    channel_patterns: re.Pattern[str] | None
    resumed: bool

    def ask_backend(self, request: ChannelRequest) -> bool:
        """Send a client's publication to the backend for approval; False if it cannot."""

    def close_requested(self, code: int, reason: str) -> None: ...

    def deliver(
        self, data: bytes, binary: bool, droppable: bool, coalesce_key: str, message_id: int = 0
    ) -> None: ...

    def grant(self, channel: str, granted: bool) -> None:
        """Remember (for a resume on any pod) that the server granted this channel."""

    def now(self) -> float: ...


@functools.lru_cache(maxsize=4096)
def token_patterns(claim: tuple[str, ...]) -> re.Pattern[str] | None:
    """The compiled ``channels`` claim, shared by every session with the same claim."""
    return compile_patterns(claim)


def claimed_channels(claims: object, name: str) -> tuple[str, ...]:
    """A list-of-strings claim (``channels``, ``subs``), as a tuple; anything else: ()."""
    value = claims.get(name) if isinstance(claims, dict) else None
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


class ChannelService:
    def __init__(
        self,
        hub: ChannelHub,
        store: ChannelStore,
        publisher: BatchedCalls[PublishRequest, Position],
        limits: ChannelLimits,
    ) -> None:
        self.hub = hub
        hub.on_command = self.command
        self._store = store
        self._publisher = publisher
        self._limits = limits
        # a user's sessions on this gateway (the gateway's connection table says)
        self.sessions_of: Callable[[str], Iterable[ChannelSession]] = lambda user: ()
        self.refused: dict[str, int] = {}  # requests refused, by reason
        self._subscribing: set[asyncio.Task[bool]] = set()  # server-side, under way

    # -- client requests ------------------------------------------------------------------

    async def request(self, session: ChannelSession, request: ChannelRequest) -> None:
        """Carry out a client's request; every outcome is answered to the client."""
        try:
            options = self.hub.options(request.channel, request.request_id)
            state = session.channels or _state(session)
            if request.kind is RequestKind.SUBSCRIBE:
                await self._subscribe(session, state, request, options)
            elif request.kind is RequestKind.UNSUBSCRIBE:
                self._unsubscribe(session, state, request, options.join_leave)
            elif request.kind is RequestKind.PUBLISH:
                route = check_publish(
                    options,
                    request.channel,
                    request.request_id,
                    subscribed=request.channel in state.held,
                    size=len(request.data),
                    pending=state.pending,
                    limits=self._limits,
                )
                self._publish_for_client(session, state, request, route)
            else:
                if state.presence_reads is None:
                    state.presence_reads = presence_reads()
                check_presence(
                    options,
                    request.channel,
                    request.request_id,
                    subscribed=request.channel in state.held,
                    reads=state.presence_reads,
                    now=session.now(),
                )
                await self._presence(session, request)
        except Refused as refused:
            self.refused[refused.code.value] = self.refused.get(refused.code.value, 0) + 1
            session.channel_frame(refused.frame())

    async def _subscribe(
        self,
        session: ChannelSession,
        state: SessionChannels,
        request: ChannelRequest,
        options: NamespaceOptions,
    ) -> None:
        channel = request.channel
        check_subscribe(
            options,
            channel,
            request.request_id,
            token_allows=allowed_by(session.channel_patterns, channel),
            granted=channel in state.granted,
            held=len(state.held),
            already=channel in state.held,
            limits=self._limits,
        )
        state.held.add(channel)
        try:
            joined = await self.hub.join(
                session, channel, options, request.since, request.request_id
            )
        except Refused:
            state.held.discard(channel)
            raise
        if not joined:
            state.held.discard(channel)

    def _unsubscribe(
        self,
        session: ChannelSession,
        state: SessionChannels,
        request: ChannelRequest,
        announce: bool,
    ) -> None:
        if request.channel not in state.held:
            raise Refused(
                ChannelError.NOT_SUBSCRIBED,
                f"not subscribed to {request.channel}",
                request.request_id,
            )
        state.held.discard(request.channel)
        self.hub.leave(session, request.channel, announce)
        session.channel_frame(frames.unsubscribed(request.request_id, request.channel, "client"))

    def _publish_for_client(
        self,
        session: ChannelSession,
        state: SessionChannels,
        request: ChannelRequest,
        route: PublishRoute,
    ) -> None:
        state.pending += 1
        if route is PublishRoute.BACKEND:
            if not session.ask_backend(request):
                state.pending -= 1
                raise Refused(
                    ChannelError.UNAVAILABLE,
                    "no backend can approve this publication",
                    request.request_id,
                )
            return
        self._publish_answered(session, request, request.data, request.binary)

    def _publish_answered(
        self, session: ChannelSession, request: ChannelRequest, data: bytes, binary: bool
    ) -> None:
        """Publish a client's publication; the client gets a reply (or an error)."""
        options = self.hub.options(request.channel, request.request_id)
        info = json.dumps({"user": session.user_id}, separators=(",", ":")).encode()

        def published(result: Position | ChannelStoreUnavailable) -> None:
            state = session.channels
            if state is not None:
                state.pending = max(0, state.pending - 1)
            if isinstance(result, ChannelStoreUnavailable):
                error = frames.error(
                    request.request_id, ChannelError.UNAVAILABLE, "the publication was not stored"
                )
                session.channel_frame(error)
                return
            result_body = {"offset": result.offset, "epoch": result.epoch}
            session.channel_frame(frames.reply(request.request_id, result_body))

        self._publisher.submit(
            PublishRequest(
                request.channel,
                data,
                binary,
                info,
                options.history_size,
                options.history_ttl_s,
                published_at=time.time(),
            ),
            published,
        )

    def decided(
        self,
        session: ChannelSession,
        request: ChannelRequest,
        accept: bool,
        data: bytes | None,
        binary: bool,
        reason: str,
    ) -> None:
        """The backend's answer to a client's publication."""
        state = session.channels
        if not accept:
            if state is not None:
                state.pending = max(0, state.pending - 1)
            message = (reason or "the backend refused the publication")[:200]
            session.channel_frame(frames.error(request.request_id, ChannelError.REJECTED, message))
            return
        try:
            if data is None:
                self._publish_answered(session, request, request.data, request.binary)
            else:
                self._publish_answered(session, request, data, binary)
        except Refused as refused:  # the namespace went away meanwhile
            if state is not None:
                state.pending = max(0, state.pending - 1)
            session.channel_frame(refused.frame())

    async def _presence(self, session: ChannelSession, request: ChannelRequest) -> None:
        try:
            entries = await self._store.presence(request.channel)
        except ChannelStoreUnavailable:
            raise Refused(
                ChannelError.UNAVAILABLE, "presence cannot be read now", request.request_id
            ) from None
        clients = []
        for entry in entries:
            try:
                clients.append(json.loads(entry))
            except ValueError:
                continue
        session.channel_frame(frames.reply(request.request_id, {"clients": clients}))

    # -- server-side subscriptions --------------------------------------------------------

    async def subscribe_server(self, session: ChannelSession, channel: str) -> bool:
        """Subscribe ``session`` (the token's ``subs``, the server API, the backend): no
        permission needed, the limits still hold. Whether it is subscribed now."""
        try:
            check_channel(channel)
            options = self.hub.options(channel)
        except (BadChannel, Refused) as exc:
            log.warning(
                "server_subscribe_refused",
                connection_id=session.connection_id,
                session_id=session.session_id,
                channel=channel[:300],
                reason=str(exc),
            )
            return False
        state = session.channels or _state(session)
        first_grant = channel not in state.granted
        state.granted.add(channel)
        if first_grant:
            session.grant(channel, True)
        if channel in state.held:
            return True
        if session.speaks_v1 and session.resumed and not first_grant:
            return False  # its client subscribes again, with its position, to recover
        try:
            check_room(len(state.held), self._limits)
        except Refused as refused:
            log.warning(
                "server_subscribe_refused",
                connection_id=session.connection_id,
                session_id=session.session_id,
                channel=channel,
                reason=refused.message,
            )
            return False
        state.held.add(channel)
        try:
            joined = await self.hub.join(session, channel, options)
        except Refused:
            joined = False
        if not joined:
            state.held.discard(channel)
        return joined

    def subscribe_soon(self, session: ChannelSession, channel: str) -> None:
        """:meth:`subscribe_server`, from code that cannot wait (commands, the bridge)."""
        task = asyncio.ensure_future(self.subscribe_server(session, channel))
        self._subscribing.add(task)
        task.add_done_callback(self._subscribing.discard)

    def unsubscribe_server(self, session: ChannelSession, channel: str) -> None:
        state = session.channels
        if state is None:
            return
        if channel in state.granted:
            state.granted.discard(channel)
            session.grant(channel, False)
        if channel in state.held:
            state.held.discard(channel)
            options = self.hub.options_or_none(channel)
            self.hub.leave(session, channel, bool(options and options.join_leave))
            if session.speaks_v1:
                session.channel_frame(frames.unsubscribed(0, channel, "server"))

    def channel_left(self, session: ChannelSession, channel: str) -> None:
        if session.channels is not None:
            session.channels.held.discard(channel)

    def leave_all(self, session: ChannelSession) -> None:
        """The session ended: out of every channel (its presence with it)."""
        state = session.channels
        if state is None:
            return
        for channel in state.held:
            options = self.hub.options_or_none(channel)
            self.hub.leave(session, channel, bool(options and options.join_leave))
        state.held.clear()

    # -- publications from backends and commands from the server API ---------------------

    def publish_for_backend(self, channel: str, data: bytes, binary: bool) -> None:
        try:
            check_channel(channel)
            options = self.hub.options(channel)
        except (BadChannel, Refused) as exc:
            log.warning("backend_publish_refused", channel=channel[:300], reason=str(exc))
            return
        request = PublishRequest(
            channel,
            data,
            binary,
            b"",
            options.history_size,
            options.history_ttl_s,
            published_at=time.time(),
        )
        self._publisher.submit(request, _log_failure)

    def command(self, command: Command) -> None:
        """A command of the server API for the sessions of one user on this gateway."""
        sessions = [
            session
            for session in self.sessions_of(command.user)
            if not command.session or session.session_id == command.session
        ]
        for session in sessions:
            if command.op == "send":
                session.deliver(command.data, command.binary, False, "")
            elif command.op == "subscribe":
                self.subscribe_soon(session, command.channel)
            elif command.op == "unsubscribe":
                self.unsubscribe_server(session, command.channel)
            elif command.op == "disconnect":
                session.close_requested(command.code, command.reason)


def _state(session: ChannelSession) -> SessionChannels:
    state = session.channels = SessionChannels()
    return state


def _log_failure(result: Position | ChannelStoreUnavailable) -> None:
    if isinstance(result, ChannelStoreUnavailable):
        log.warning("publication_not_stored", error=str(result)[:200])
