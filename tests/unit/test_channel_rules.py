"""Who may do what in a channel: every refusal with its code, and what is allowed."""

from __future__ import annotations

import pytest

from sidecar.core.channel_frames import ChannelError, Refused
from sidecar.core.channel_rules import (
    ChannelLimits,
    PublishRoute,
    check_presence,
    check_publish,
    check_subscribe,
    presence_reads,
)
from wsfleet.channels.namespaces import NamespaceOptions

LIMITS = ChannelLimits(max_subscriptions=2, max_pending=3)
OPEN = NamespaceOptions(allow_subscribe=True, allow_publish=True, presence=True)
CLOSED = NamespaceOptions()


def _subscribe(options: NamespaceOptions, **overrides: object) -> None:
    values: dict[str, object] = {
        "token_allows": False,
        "granted": False,
        "held": 0,
        "already": False,
        "limits": LIMITS,
    }
    values.update(overrides)
    check_subscribe(options, "c", 7, **values)  # type: ignore[arg-type]


def _code(call: object) -> ChannelError:
    assert callable(call)
    with pytest.raises(Refused) as refused:
        call()
    assert refused.value.request_id in (0, 7)
    return refused.value.code


def test_a_subscribe_needs_the_namespace_a_token_claim_or_a_grant() -> None:
    assert _code(lambda: _subscribe(CLOSED)) is ChannelError.PERMISSION_DENIED
    _subscribe(OPEN)
    _subscribe(CLOSED, token_allows=True)
    _subscribe(CLOSED, granted=True)  # the server subscribed it before (a resume)


def test_a_subscribe_is_refused_twice_and_beyond_the_limit() -> None:
    assert _code(lambda: _subscribe(OPEN, already=True)) is ChannelError.ALREADY_SUBSCRIBED
    assert _code(lambda: _subscribe(OPEN, held=2)) is ChannelError.TOO_MANY_SUBSCRIPTIONS
    assert _code(lambda: _subscribe(OPEN, granted=True, held=2)) is (
        ChannelError.TOO_MANY_SUBSCRIPTIONS  # a grant does not lift the limit
    )


def _publish(options: NamespaceOptions, **overrides: object) -> PublishRoute:
    values: dict[str, object] = {"subscribed": True, "size": 10, "pending": 0, "limits": LIMITS}
    values.update(overrides)
    return check_publish(options, "c", 7, **values)  # type: ignore[arg-type]


def test_a_publication_needs_the_namespace_a_subscription_room_and_a_size() -> None:
    assert _publish(OPEN) is PublishRoute.STORE
    via_backend = NamespaceOptions(allow_publish=True, publish_via_backend=True)
    assert _publish(via_backend) is PublishRoute.BACKEND
    assert _code(lambda: _publish(CLOSED)) is ChannelError.PERMISSION_DENIED
    assert _code(lambda: _publish(OPEN, subscribed=False)) is ChannelError.NOT_SUBSCRIBED
    assert _code(lambda: _publish(OPEN, size=65_537)) is ChannelError.TOO_BIG
    assert _code(lambda: _publish(OPEN, pending=3)) is ChannelError.TOO_MANY_REQUESTS


def test_presence_requests_are_rationed_per_session() -> None:
    reads = presence_reads()
    now = 100.0

    def ask() -> None:
        check_presence(OPEN, "c", 7, subscribed=True, reads=reads, now=now)

    for _ in range(5):
        ask()  # a burst of five
    assert _code(ask) is ChannelError.TOO_MANY_REQUESTS
    now += 0.5
    ask()  # one more after half a second (2 a second)
    assert _code(lambda: check_presence(CLOSED, "c", 7, subscribed=True, reads=reads, now=now)) is (
        ChannelError.PERMISSION_DENIED
    )
    assert _code(lambda: check_presence(OPEN, "c", 7, subscribed=False, reads=reads, now=now)) is (
        ChannelError.NOT_SUBSCRIBED
    )
