"""wsfleet protocol v1 frames: JSON envelopes around messages, with sequence numbers.

Server -> client::

    {"type": "welcome", "session": S, "seq": N, "cseq": C, "resumed": bool, "replayed": n,
     "resync": bool, "transport": T, "pod": P}
    {"type": "message", "seq": N, "data": "text"}          (or "data_b64" for binary)
    {"type": "notice", "reason": "rate_limited"}
    {"type": "close", "code": 1012, "reason": "drain; retry_after_ms=250"}   (SSE, poll)

Client -> server::

    {"type": "message", "cseq": N, "data": "text"}          (or "data_b64"; cseq 0: unnumbered,
                                                            at most MAX_CSEQ = 2**53 - 1)
    {"type": "ping"}                                        (answered {"type": "pong"})
    {"type": "subscribe" | "unsubscribe" | "publish" | "presence", "id": N, "channel": C, ...}
                                                            (:mod:`sidecar.core.channel_frames`)

Raw WebSocket clients (no ``wsfleet.v1`` subprotocol) see bare messages instead.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, NamedTuple

from sidecar.core.channel_frames import REQUEST_TYPES, ChannelRequest, parse_request

PROTOCOL = "wsfleet.v1"


class EnvelopeError(ValueError):
    """A client frame that is not a v1 message."""


class ClientMessage(NamedTuple):
    """A client's message (or control frame: a negative ``cseq``). A named tuple: one is
    made per message, in a third of a frozen dataclass's time."""

    cseq: int
    data: bytes
    binary: bool


_json_string = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C)
PING = "ping"  # a client frame {"type": "ping"} is answered {"type": "pong"}: browsers
# cannot see WebSocket ping frames, so their SDK checks liveness this way
REFRESH = "refresh"  # {"type": "refresh", "token": T}: the session lives on with token T
# control frames parse to a ClientMessage with a negative cseq naming them
PING_CSEQ = -1
REFRESH_CSEQ = -2
# The highest client sequence number: what a JavaScript number holds exactly (a cseq is
# persisted, sent to the backend as a uint64 and echoed in the welcome to JS clients).
MAX_CSEQ = 2**53 - 1


def pong() -> str:
    return '{"type":"pong"}'


def message(seq: int, data: bytes, binary: bool) -> bytes:
    """A server message frame, as the bytes that go on the wire (always ASCII).

    Written directly rather than through a dict and ``json.dumps``: this runs once per
    message, and the same JSON comes out (``json.loads`` reads it back to the same dict).
    """
    if binary:
        return b'{"type":"message","seq":%d,"data_b64":"%s"}' % (seq, base64.b64encode(data))
    text = _json_string(data.decode("utf-8", errors="replace"))
    return b'{"type":"message","seq":%d,"data":%s}' % (seq, text.encode())


_compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, made once


def welcome(
    session: str,
    seq: int,
    resumed: bool,
    replayed: int,
    resync: bool,
    transport: str,
    pod: str,
    cseq: int = 0,
) -> str:
    """``seq``: the last seq sent so far; ``cseq``: the last client seq delivered."""
    return _compact(
        {
            "type": "welcome",
            "session": session,
            "seq": seq,
            "cseq": cseq,
            "resumed": resumed,
            "replayed": replayed,
            "resync": resync,
            "transport": transport,
            "pod": pod,
        }
    )


def notice(reason: str) -> str:
    return _compact({"type": "notice", "reason": reason})


def close(code: int, reason: str) -> str:
    return _compact({"type": "close", "code": code, "reason": reason})


_SPACE = "[ \t\n\r]*"  # JSON's whitespace (not Python's \\s: that takes more)
_PLAIN_MESSAGE = re.compile(
    f'{_SPACE}\\{{{_SPACE}"type"{_SPACE}:{_SPACE}"message"{_SPACE},{_SPACE}'
    f'(?:"cseq"{_SPACE}:{_SPACE}(0|[1-9][0-9]{{0,15}}){_SPACE},{_SPACE})?'
    f'"data"{_SPACE}:{_SPACE}"([^"\\\\\\x00-\\x1f]*)"{_SPACE}\\}}{_SPACE}'
)
"""A text message as the SDKs write it (type, cseq, data, in that order; any JSON
spacing) whose data has no escape: read without a JSON parse, in a fifth to a third of
its time. Such a frame reads exactly as :func:`parse_client_json` reads it."""


def parse_client(text: str) -> ClientMessage | ChannelRequest:
    """A client's v1 frame; raises :class:`EnvelopeError` naming what is wrong, or (a
    channel request) :class:`~sidecar.core.channel_frames.Refused`."""
    plain = _PLAIN_MESSAGE.fullmatch(text)
    if plain is not None:  # the usual frame; anything in doubt takes the general path
        cseq_text, data = plain.groups()
        cseq = int(cseq_text) if cseq_text else 0
        if cseq <= MAX_CSEQ:
            try:
                return ClientMessage(cseq, data.encode(), False)
            except UnicodeEncodeError:  # a lone surrogate: the general path names it
                pass
    return parse_client_json(text)


def parse_client_json(text: str) -> ClientMessage | ChannelRequest:
    """:func:`parse_client` through the JSON parser, for any frame (what it does with all
    but the usual one)."""
    try:
        body = json.loads(text)
    except ValueError:
        raise EnvelopeError('not JSON: a v1 frame is {"type": "message", ...}') from None
    except RecursionError:  # thousands of nested brackets
        raise EnvelopeError("nested too deeply: a v1 frame is one flat object") from None
    return read_client(body)


def read_client(body: Any) -> ClientMessage | ChannelRequest:
    """A client's v1 frame parsed already (a POST's frames are parsed as its body is
    split: once); raises as :func:`parse_client` does."""
    if isinstance(body, dict) and body.get("type") == PING:
        return ClientMessage(PING_CSEQ, b"", False)
    kind = body.get("type") if isinstance(body, dict) else None
    if isinstance(kind, str) and kind in REQUEST_TYPES:  # (a type may be any JSON value)
        return parse_request(body)
    if isinstance(body, dict) and body.get("type") == REFRESH:
        token = body.get("token")
        if not isinstance(token, str) or not token.isascii():
            raise EnvelopeError('a refresh frame needs "token": a JWT')
        return ClientMessage(REFRESH_CSEQ, token.encode(), False)
    if not isinstance(body, dict) or body.get("type") != "message":
        raise EnvelopeError(
            'a v1 frame needs "type": "message" (or "ping", "refresh", "subscribe", '
            '"unsubscribe", "publish", "presence")'
        )
    cseq = body.get("cseq", 0)
    if isinstance(cseq, bool) or not isinstance(cseq, int) or not 0 <= cseq <= MAX_CSEQ:
        raise EnvelopeError('"cseq" must be a non-negative integer below 2**53')
    if "data_b64" in body:
        try:
            return ClientMessage(cseq, base64.b64decode(body["data_b64"], validate=True), True)
        except (ValueError, TypeError):  # binascii.Error, non-ASCII text, not a string
            raise EnvelopeError('"data_b64" is not base64') from None
    data = body.get("data")
    if not isinstance(data, str):
        raise EnvelopeError('"data" must be a string')
    try:
        return ClientMessage(cseq, data.encode(), False)
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON ("\ud800")
        raise EnvelopeError('"data" is not valid Unicode text') from None
