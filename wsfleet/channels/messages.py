"""What travels on a channel's pub/sub topic, and on a gateway's command topic.

A channel's topic (``{ns}:topic:<channel>``) carries, as bytes:

- a publication: ``p`` + a JSON header + ``\\n`` + the data, the header being
  ``{"o":<offset>,"e":"<epoch>","b":<0|1>}`` with ``,"t":<microseconds>`` (the publish
  time, Unix time by the publisher's clock: the gateways time deliveries from it) and
  ``,"i":{...}`` (the publisher's info) when there are. The publish script
  (:mod:`wsfleet.channels.redis_store`) writes the same bytes as
  :func:`publication_message`. Publications of older versions carry no ``t``: they are
  read as before (publish time unknown), and older readers skip it;
- a join or a leave: ``j`` or ``l`` + the subscriber's info as JSON.

A gateway's command topic (``{ns}:podcmd:<pod>``) carries one JSON command: send,
subscribe, unsubscribe or disconnect, for a user's sessions (or one of them).
Everything read from a topic is checked: a malformed message is refused, never half-used.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Literal

from wsfleet.channels.names import BadChannel, check_channel


class BadMessage(ValueError):
    """A topic message this version cannot read."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication as a gateway receives it (and as history keeps it)."""

    channel: str
    offset: int  # 1, 2, 3... within the epoch; 0 in a channel without history
    epoch: str
    data: bytes
    binary: bool
    info: bytes = b""  # the publisher's info, a JSON object (b"": none)
    # when it was published (Unix seconds, the publisher's clock; 0: unknown, as in
    # history and older publishers' messages): a timing, not part of what was published
    published_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """Someone joined or left a channel (namespaces with ``join_leave``)."""

    channel: str
    joined: bool
    info: bytes  # the subscriber's info, a JSON object


def publish_time_field(published_at: float) -> int:
    """A publish time as the header's ``t``: whole microseconds (0: none)."""
    return max(0, int(published_at * 1_000_000))


def publication_header(
    offset: int, epoch: str, binary: bool, info: bytes, published_us: int = 0
) -> bytes:
    extra = b',"t":%d' % published_us if published_us > 0 else b""
    if info:
        extra += b',"i":' + info
    return b'{"o":%d,"e":"%s","b":%d%s}\n' % (offset, epoch.encode(), int(binary), extra)


def publication_message(
    offset: int, epoch: str, data: bytes, binary: bool, info: bytes, published_us: int = 0
) -> bytes:
    return b"p" + publication_header(offset, epoch, binary, info, published_us) + data


def presence_message(joined: bool, info: bytes) -> bytes:
    return (b"j" if joined else b"l") + info


def read_topic_message(channel: str, message: bytes) -> Publication | PresenceChange:
    """A channel topic's message; :class:`BadMessage` if it is not one."""
    kind = message[:1]
    if kind == b"p":
        header, newline, data = message[1:].partition(b"\n")
        if not newline:
            raise BadMessage("a publication has a header line")
        try:
            fields = json.loads(header)
            offset, epoch, binary = fields["o"], fields["e"], fields["b"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BadMessage("a publication's header is JSON with o, e and b") from None
        if not isinstance(offset, int) or offset < 0 or not isinstance(epoch, str):
            raise BadMessage("a publication's offset is a number, its epoch a string")
        info = fields.get("i")
        info_bytes = json.dumps(info, separators=(",", ":")).encode() if info else b""
        return Publication(
            channel, offset, epoch, data, bool(binary), info_bytes, _publish_time(fields)
        )
    if kind in (b"j", b"l"):
        return PresenceChange(channel, kind == b"j", message[1:])
    raise BadMessage(f"unknown topic message kind {kind!r}")


def _publish_time(fields: dict[str, object]) -> float:
    """The header's publish time in Unix seconds; 0 when it has none (an older publisher)
    or one that is not a positive whole number of microseconds (only a timing: the
    publication itself is good, so it is delivered and timed from its read)."""
    published_us = fields.get("t")
    if type(published_us) is not int or published_us <= 0:
        return 0.0
    return published_us / 1_000_000


# -- commands for a gateway ----------------------------------------------------------

CommandOp = Literal["send", "subscribe", "unsubscribe", "disconnect"]
OPS: tuple[CommandOp, ...] = ("send", "subscribe", "unsubscribe", "disconnect")


@dataclass(frozen=True, slots=True)
class Command:
    """Something the server API asks of the gateways holding a user's sessions."""

    op: CommandOp
    user: str
    session: str = ""  # "": every session of the user on that gateway
    channel: str = ""  # subscribe, unsubscribe
    data: bytes = b""  # send
    binary: bool = False  # send
    code: int = 0  # disconnect
    reason: str = ""  # disconnect

    def encode(self) -> bytes:
        body: dict[str, object] = {"op": self.op, "user": self.user}
        if self.session:
            body["session"] = self.session
        if self.op in ("subscribe", "unsubscribe"):
            body["channel"] = self.channel
        elif self.op == "send":
            if self.binary:
                body["data_b64"] = base64.b64encode(self.data).decode()
            else:
                body["data"] = self.data.decode()
        elif self.op == "disconnect":
            body.update(code=self.code, reason=self.reason)
        return json.dumps(body, separators=(",", ":")).encode()


def read_command(message: bytes) -> Command:
    """A command topic's message; :class:`BadMessage` if it is not one."""
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):
        raise BadMessage("a command is JSON") from None
    if not isinstance(body, dict) or body.get("op") not in OPS:
        raise BadMessage(f"a command's op is one of {', '.join(OPS)}")
    op = body["op"]
    user, session = body.get("user"), body.get("session", "")
    if not isinstance(user, str) or not user or not isinstance(session, str):
        raise BadMessage("a command names a user (and maybe a session)")
    if op in ("subscribe", "unsubscribe"):
        try:
            channel = check_channel(body.get("channel"))
        except BadChannel as exc:
            raise BadMessage(str(exc)) from None
        return Command(op, user, session, channel=channel)
    if op == "send":
        if isinstance(body.get("data"), str):
            return Command(op, user, session, data=body["data"].encode())
        encoded = body.get("data_b64")
        try:
            if not isinstance(encoded, str):
                raise TypeError(encoded)
            data = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            raise BadMessage("a send carries data or data_b64") from None
        return Command(op, user, session, data=data, binary=True)
    code, reason = body.get("code"), body.get("reason", "")
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(reason, str):
        raise BadMessage("a disconnect has a code and a reason")
    return Command(op, user, session, code=code, reason=reason)


__all__ = [
    "OPS",
    "BadMessage",
    "Command",
    "CommandOp",
    "PresenceChange",
    "Publication",
    "presence_message",
    "publication_header",
    "publication_message",
    "publish_time_field",
    "read_command",
    "read_topic_message",
]
