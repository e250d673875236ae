"""Protocol v1 frames for channels (docs/channels.md), with no I/O.

Client requests (``subscribe``, ``unsubscribe``, ``publish``, ``presence``) parse to a
:class:`ChannelRequest`; the gateway's answers and pushes are encoded here. A
publication's frame is made once per gateway (:class:`PublicationFrames`) and shared by
every subscriber: the same bytes, and the same whole WebSocket frame.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sidecar.core.ws_frames import OP_BINARY, OP_TEXT, server_frame
from wsfleet.channels.messages import Publication
from wsfleet.channels.names import BadChannel, check_channel

_json_string = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C)
_compact = json.JSONEncoder(separators=(",", ":")).encode
MAX_REQUEST_ID = 2**53 - 1  # what a JavaScript number holds exactly


class RequestKind(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"


class ChannelError(StrEnum):
    """Why a channel request was refused (the ``code`` of an ``error`` frame)."""

    BAD_REQUEST = "bad_request"
    BAD_CHANNEL = "bad_channel"
    UNKNOWN_NAMESPACE = "unknown_namespace"
    PERMISSION_DENIED = "permission_denied"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    ALREADY_SUBSCRIBED = "already_subscribed"
    NOT_SUBSCRIBED = "not_subscribed"
    TOO_BIG = "too_big"
    TOO_MANY_REQUESTS = "too_many_requests"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"


class Refused(Exception):
    """A request the gateway answers with an ``error`` frame (with the request's id, when
    it is known)."""

    def __init__(self, code: ChannelError, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def frame(self) -> bytes:
        return error(self.request_id, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Since:
    """Where a client left a channel: recover what came after ``offset`` in ``epoch``."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    kind: RequestKind
    request_id: int
    channel: str
    since: Since | None = None
    data: bytes = b""
    binary: bool = False


REQUEST_TYPES = frozenset(kind.value for kind in RequestKind)


def parse_request(body: dict[str, Any]) -> ChannelRequest:
    """A channel request from a parsed v1 frame whose ``type`` is one of
    :data:`REQUEST_TYPES`; :class:`Refused` (with the request id when there is one) says
    what is wrong."""
    kind = RequestKind(body["type"])
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise Refused(ChannelError.BAD_REQUEST, f'a {kind} frame needs "id": a positive integer')
    if not 0 < request_id <= MAX_REQUEST_ID:
        raise Refused(ChannelError.BAD_REQUEST, '"id" must be a positive integer below 2**53')
    try:
        channel = check_channel(body.get("channel"))
    except BadChannel as exc:
        raise Refused(ChannelError.BAD_CHANNEL, str(exc), request_id) from None
    if kind is RequestKind.SUBSCRIBE:
        return ChannelRequest(kind, request_id, channel, since=_since(request_id, body))
    if kind is RequestKind.PUBLISH:
        data, binary = _data(request_id, body)
        return ChannelRequest(kind, request_id, channel, data=data, binary=binary)
    return ChannelRequest(kind, request_id, channel)


def _since(request_id: int, body: dict[str, Any]) -> Since | None:
    since = body.get("since")
    if since is None:
        return None
    offset = since.get("offset") if isinstance(since, dict) else None
    epoch = since.get("epoch") if isinstance(since, dict) else None
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int)
        or offset < 0
        or not isinstance(epoch, str)
        or len(epoch) > 64
    ):
        raise Refused(
            ChannelError.BAD_REQUEST,
            '"since" is {"offset": a non-negative integer, "epoch": a string}',
            request_id,
        )
    return Since(offset, epoch)


def _data(request_id: int, body: dict[str, Any]) -> tuple[bytes, bool]:
    if "data_b64" in body:
        try:
            return base64.b64decode(body["data_b64"], validate=True), True
        except (ValueError, TypeError):
            message = '"data_b64" is not base64'
            raise Refused(ChannelError.BAD_REQUEST, message, request_id) from None
    data = body.get("data")
    if not isinstance(data, str):
        raise Refused(ChannelError.BAD_REQUEST, '"data" must be a string', request_id)
    try:
        return data.encode(), False
    except UnicodeEncodeError:
        message = '"data" is not valid Unicode text'
        raise Refused(ChannelError.BAD_REQUEST, message, request_id) from None


# -- gateway -> client ----------------------------------------------------------------


def subscribed(
    request_id: int,
    channel: str,
    epoch: str,
    offset: int,
    recoverable: bool,
    recovered: bool,
    missed: int,
) -> bytes:
    """The answer to a subscribe (``request_id`` 0: a server-side subscription)."""
    frame: dict[str, Any] = {"type": "subscribed"}
    if request_id:
        frame["id"] = request_id
    frame.update(
        channel=channel,
        epoch=epoch,
        offset=offset,
        recoverable=recoverable,
        recovered=recovered,
        missed=missed,
    )
    if not request_id:
        frame["server"] = True
    return _compact(frame).encode()


def unsubscribed(request_id: int, channel: str, reason: str) -> bytes:
    frame: dict[str, Any] = {"type": "unsubscribed"}
    if request_id:
        frame["id"] = request_id
    frame.update(channel=channel, reason=reason)
    return _compact(frame).encode()


def reply(request_id: int, result: dict[str, Any]) -> bytes:
    return _compact({"type": "reply", "id": request_id, "result": result}).encode()


def error(request_id: int, code: ChannelError, message: str) -> bytes:
    frame: dict[str, Any] = {"type": "error"}
    if request_id:
        frame["id"] = request_id
    frame.update(code=code.value, message=message)
    return _compact(frame).encode()


def presence_change(channel: str, joined: bool, info: bytes) -> bytes:
    kind = b"join" if joined else b"leave"
    return b'{"type":"%s","channel":%s,"info":%s}' % (kind, _json_string(channel).encode(), info)


class PublicationFrames:
    """A publication's frames, each made once (when first needed) and shared by every
    subscriber of this gateway: the v1 frame (SSE, long polling), the whole WebSocket
    frame of it, and the bare data's WebSocket frame (raw WebSocket subscribers)."""

    __slots__ = ("_raw_ws", "_v1", "_v1_ws", "publication")

    def __init__(self, publication: Publication) -> None:
        self.publication = publication
        self._v1: bytes | None = None
        self._v1_ws: bytes | None = None
        self._raw_ws: bytes | None = None

    @property
    def v1(self) -> bytes:
        if self._v1 is None:
            p = self.publication
            channel = _json_string(p.channel).encode()
            if p.binary:
                body = b'"data_b64":"%s"' % base64.b64encode(p.data)
            else:
                text = p.data.decode("utf-8", errors="replace")
                body = b'"data":%s' % _json_string(text).encode()
            info = b',"info":' + p.info if p.info else b""
            self._v1 = b'{"type":"pub","channel":%s,"offset":%d,%s%s}' % (
                channel,
                p.offset,
                body,
                info,
            )
        return self._v1

    @property
    def v1_websocket(self) -> bytes:
        if self._v1_ws is None:
            self._v1_ws = server_frame(OP_TEXT, self.v1)
        return self._v1_ws

    @property
    def raw_websocket(self) -> bytes:
        if self._raw_ws is None:
            p = self.publication
            if p.binary:
                self._raw_ws = server_frame(OP_BINARY, p.data)
            else:
                text = p.data.decode("utf-8", errors="replace").encode()
                self._raw_ws = server_frame(OP_TEXT, text)
        return self._raw_ws


class PublicationBatch:
    """Publications of one channel given out together: their WebSocket frames joined once
    (each subscriber gets them in one write, the same bytes as every other)."""

    __slots__ = ("_raw_ws", "_v1_ws", "first_offset", "frames")

    def __init__(self, frames: list[PublicationFrames]) -> None:
        self.frames = frames
        self.first_offset = frames[0].publication.offset
        self._v1_ws: bytes | None = None
        self._raw_ws: bytes | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def v1_websocket(self) -> bytes:
        if self._v1_ws is None:
            self._v1_ws = b"".join(f.v1_websocket for f in self.frames)
        return self._v1_ws

    @property
    def raw_websocket(self) -> bytes:
        if self._raw_ws is None:
            self._raw_ws = b"".join(f.raw_websocket for f in self.frames)
        return self._raw_ws

    def data_bytes(self, v1: bool) -> int:
        """The payload bytes it carries (what the send counters count)."""
        if v1:
            return sum(len(f.v1) for f in self.frames)
        return sum(len(f.publication.data) for f in self.frames)


__all__ = [
    "REQUEST_TYPES",
    "ChannelError",
    "ChannelRequest",
    "PublicationBatch",
    "PublicationFrames",
    "Refused",
    "RequestKind",
    "Since",
    "error",
    "parse_request",
    "presence_change",
    "reply",
    "subscribed",
    "unsubscribed",
]
