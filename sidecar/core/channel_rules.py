"""Who may do what in a channel, and how much of it: the decisions of a channel request,
with no I/O. Each check raises :class:`~sidecar.core.channel_frames.Refused` with the
reason the client is told, or returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sidecar.core.channel_frames import ChannelError, Refused
from sidecar.core.rate_limit import TokenBucket
from wsfleet.channels.namespaces import NamespaceOptions

PRESENCE_READS_PER_S = 2.0  # a client's presence requests (each reads a whole channel) ...
PRESENCE_READ_BURST = 5.0  # ... at most this many at once


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    max_subscriptions: int  # channels per connection
    max_pending: int  # publications awaiting the store or the backend, per session


class PublishRoute(Enum):
    STORE = "store"  # published at once
    BACKEND = "backend"  # the backend approves it first


def check_subscribe(
    options: NamespaceOptions,
    channel: str,
    request_id: int,
    *,
    token_allows: bool,
    granted: bool,
    held: int,
    already: bool,
    limits: ChannelLimits,
) -> None:
    """A client's subscribe: allowed by the namespace, its token's ``channels`` claim, or a
    server-side grant of this session; within the subscription limit; not twice."""
    if already:
        raise Refused(
            ChannelError.ALREADY_SUBSCRIBED, f"already subscribed to {channel}", request_id
        )
    if not (options.allow_subscribe or token_allows or granted):
        raise Refused(
            ChannelError.PERMISSION_DENIED,
            f"the token does not allow subscribing to {channel}",
            request_id,
        )
    check_room(held, limits, request_id)


def check_room(held: int, limits: ChannelLimits, request_id: int = 0) -> None:
    """One more subscription fits this connection's limit."""
    if held >= limits.max_subscriptions:
        raise Refused(
            ChannelError.TOO_MANY_SUBSCRIPTIONS,
            f"at most {limits.max_subscriptions} channels per connection",
            request_id,
        )


def check_publish(
    options: NamespaceOptions,
    channel: str,
    request_id: int,
    *,
    subscribed: bool,
    size: int,
    pending: int,
    limits: ChannelLimits,
) -> PublishRoute:
    """A client's publication: the namespace allows it, the client is subscribed, it fits
    the namespace's size, and the session is not waiting on too many already."""
    if not options.allow_publish:
        raise Refused(
            ChannelError.PERMISSION_DENIED, f"clients may not publish to {channel}", request_id
        )
    if not subscribed:
        raise Refused(
            ChannelError.NOT_SUBSCRIBED, f"subscribe to {channel} before publishing", request_id
        )
    if size > options.max_publication_bytes:
        raise Refused(
            ChannelError.TOO_BIG,
            f"a publication to {channel} has at most {options.max_publication_bytes} bytes",
            request_id,
        )
    if pending >= limits.max_pending:
        raise Refused(
            ChannelError.TOO_MANY_REQUESTS,
            f"at most {limits.max_pending} publications may await an answer",
            request_id,
        )
    return PublishRoute.BACKEND if options.publish_via_backend else PublishRoute.STORE


def check_presence(
    options: NamespaceOptions,
    channel: str,
    request_id: int,
    *,
    subscribed: bool,
    reads: TokenBucket,
    now: float,
) -> None:
    """A client's presence request: the namespace keeps presence, the client is
    subscribed, and it asks no more often than :data:`PRESENCE_READS_PER_S`."""
    if not options.presence:
        raise Refused(ChannelError.PERMISSION_DENIED, f"{channel} keeps no presence", request_id)
    if not subscribed:
        raise Refused(
            ChannelError.NOT_SUBSCRIBED, f"subscribe to {channel} to see who is there", request_id
        )
    if not reads.take(1, now):
        raise Refused(
            ChannelError.TOO_MANY_REQUESTS,
            f"at most {PRESENCE_READS_PER_S:g} presence requests a second",
            request_id,
        )


def presence_reads() -> TokenBucket:
    return TokenBucket(PRESENCE_READS_PER_S, PRESENCE_READ_BURST)


__all__ = [
    "ChannelLimits",
    "PublishRoute",
    "check_presence",
    "check_publish",
    "check_room",
    "check_subscribe",
    "presence_reads",
]
