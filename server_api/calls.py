"""The server API's calls: each method's body, checked into a typed call, with no I/O.

A body that breaks a rule is refused with :class:`BadCall`, whose message names the field
and the rule; an unknown field is refused too (a typo should not be silently ignored).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from wsfleet.channels.names import BadChannel, check_channel

MAX_BROADCAST_CHANNELS = 1000
MAX_REASON_BYTES = 123
DEFAULT_HISTORY_LIMIT = 100
# close codes an application may end a session with (as a backend may)
CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012, 1013}) | frozenset(range(3000, 5000))


class BadCall(ValueError):
    """A call the API refuses (400) with this message."""


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class Publish:
    channel: str
    payload: Data


@dataclass(frozen=True, slots=True)
class Broadcast:
    channels: tuple[str, ...]
    payload: Data


@dataclass(frozen=True, slots=True)
class Send:
    user: str
    session: str
    payload: Data


@dataclass(frozen=True, slots=True)
class Subscription:
    """``subscribe`` or ``unsubscribe`` a user's sessions (or one of them)."""

    user: str
    session: str
    channel: str
    subscribe: bool


@dataclass(frozen=True, slots=True)
class Disconnect:
    user: str
    session: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    channel: str
    stats: bool  # counts only


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    channel: str
    after: int | None  # since's offset (None: the newest ``limit``)
    epoch: str | None  # since's epoch
    limit: int


Call = Publish | Broadcast | Send | Subscription | Disconnect | PresenceQuery | HistoryQuery

# method -> (scope, fields it takes)
METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "publish": ("publish", frozenset({"channel", "data", "data_b64"})),
    "broadcast": ("publish", frozenset({"channels", "data", "data_b64"})),
    "send": ("send", frozenset({"user", "session", "data", "data_b64"})),
    "subscribe": ("subscribe", frozenset({"user", "session", "channel"})),
    "unsubscribe": ("subscribe", frozenset({"user", "session", "channel"})),
    "disconnect": ("disconnect", frozenset({"user", "session", "code", "reason"})),
    "presence": ("presence", frozenset({"channel"})),
    "presence_stats": ("presence", frozenset({"channel"})),
    "history": ("history", frozenset({"channel", "since", "limit"})),
}


def parse_call(method: str, body: object) -> Call:
    """The call ``method`` with ``body`` asks for; :class:`BadCall` says what is wrong.
    ``method`` must be one of :data:`METHODS`."""
    if not isinstance(body, dict):
        raise BadCall("the body is a JSON object")
    _, fields = METHODS[method]
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadCall(f"{method} takes {', '.join(sorted(fields))}; not {unknown[0]!r}")
    if method == "publish":
        return Publish(_channel(body, "channel"), _payload(body))
    if method == "broadcast":
        channels = body.get("channels")
        if not isinstance(channels, list) or not 0 < len(channels) <= MAX_BROADCAST_CHANNELS:
            raise BadCall(f"channels is a list of 1 to {MAX_BROADCAST_CHANNELS} channels")
        names = tuple(_channel({"channel": c}, f"channels[{i}]") for i, c in enumerate(channels))
        return Broadcast(names, _payload(body))
    if method == "send":
        return Send(_user(body), _session(body), _payload(body))
    if method in ("subscribe", "unsubscribe"):
        return Subscription(
            _user(body), _session(body), _channel(body, "channel"), method == "subscribe"
        )
    if method == "disconnect":
        code = body.get("code", 1000)
        if isinstance(code, bool) or not isinstance(code, int) or code not in CLOSE_CODES:
            raise BadCall("code is 1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999")
        reason = body.get("reason", "disconnected by the server")
        if not isinstance(reason, str) or len(reason.encode()) > MAX_REASON_BYTES:
            raise BadCall(f"reason is a string of at most {MAX_REASON_BYTES} bytes")
        return Disconnect(_user(body), _session(body), code, reason)
    if method in ("presence", "presence_stats"):
        return PresenceQuery(_channel(body, "channel"), method == "presence_stats")
    return _history(body)


def _channel(body: dict[str, Any], name: str) -> str:
    try:
        return check_channel(body.get("channel"))
    except BadChannel as exc:
        raise BadCall(f"{name}: {exc}") from None


def _user(body: dict[str, Any]) -> str:
    user = body.get("user")
    if not isinstance(user, str) or not user or len(user) > 256:
        raise BadCall("user is the user's id (a string of 1 to 256 characters)")
    return user


def _session(body: dict[str, Any]) -> str:
    session = body.get("session", "")
    if not isinstance(session, str) or len(session) > 128:
        raise BadCall("session is a session id (a string), or absent: every session of the user")
    return session


def _payload(body: dict[str, Any]) -> Data:
    if ("data" in body) == ("data_b64" in body):
        raise BadCall("give data (text) or data_b64 (binary, base64), one of them")
    if "data" in body:
        text = body["data"]
        if not isinstance(text, str):
            raise BadCall("data is a string (use data_b64 for bytes)")
        try:
            return Data(text.encode(), False)
        except UnicodeEncodeError:
            raise BadCall("data is not valid Unicode text") from None
    try:
        return Data(base64.b64decode(body["data_b64"], validate=True), True)
    except (ValueError, TypeError):
        raise BadCall("data_b64 is not base64") from None


def _history(body: dict[str, Any]) -> HistoryQuery:
    channel = _channel(body, "channel")
    limit = body.get("limit", DEFAULT_HISTORY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadCall("limit is a positive integer")
    since = body.get("since")
    if since is None:
        return HistoryQuery(channel, None, None, limit)
    offset = since.get("offset") if isinstance(since, dict) else None
    epoch = since.get("epoch", "") if isinstance(since, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise BadCall('since is {"offset": a non-negative integer, "epoch": a string}')
    if not isinstance(epoch, str):
        raise BadCall('since is {"offset": a non-negative integer, "epoch": a string}')
    return HistoryQuery(channel, offset, epoch, limit)
