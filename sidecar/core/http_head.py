"""The head of an HTTP/1.x request, read by the gateway's public port itself for WebSocket
upgrades (everything else goes to aiohttp), and the plain answers it writes when it
refuses one. Sans-I/O: bytes in, a :class:`RequestHead` out, or
:class:`~sidecar.core.ws_handshake.NotAnUpgrade` with the status to answer.

Which requests the port reads itself is decided on the request line's first bytes
(:func:`route`): ``GET /ws`` and ``GET /ws?…``. The rest of the head must then be well
formed and bounded (:data:`MAX_HEAD_BYTES`, :data:`MAX_HEADERS`), carry no body (an
upgrade's next bytes are WebSocket frames), and is kept only until the handshake is done.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass
from enum import Enum

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.core.ws_handshake import NotAnUpgrade

MAX_HEAD_BYTES = 32 * 1024  # request line and headers (aiohttp allows 8 KiB per line)
MAX_HEADERS = 128
_NATIVE_PREFIXES = (b"GET /ws ", b"GET /ws?")
_PREFIX_BYTES = 8
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 token)


class Route(Enum):
    NATIVE = "native"  # a GET of the WebSocket path: the port reads it
    AIOHTTP = "aiohttp"  # anything else


def route(start: bytes) -> Route | None:
    """Who serves a connection whose bytes so far are ``start``; None until that is known
    (fewer than 8 bytes that could still be ``GET /ws``)."""
    if len(start) >= _PREFIX_BYTES:
        return Route.NATIVE if start[:_PREFIX_BYTES] in _NATIVE_PREFIXES else Route.AIOHTTP
    if any(prefix.startswith(start) for prefix in _NATIVE_PREFIXES):
        return None
    return Route.AIOHTTP


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What a handshake reads of its request: the path, the query as sent (still
    percent-encoded), the HTTP version and the headers (values decoded as UTF-8, bytes
    that are not read as lone surrogates, as aiohttp does)."""

    method: str
    path: str
    raw_query: str
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]


def head_end(buffer: bytes, start: int = 0) -> int:
    """Where the head's blank line ends in ``buffer`` (the first byte after it), searched
    from ``start`` (what an earlier call searched, less 3 bytes); -1 when it has not come
    yet. Raises :class:`NotAnUpgrade` (431) when it is past the bound."""
    end = buffer.find(b"\r\n\r\n", start, MAX_HEAD_BYTES)
    if end >= 0:
        return end + 4
    if len(buffer) >= MAX_HEAD_BYTES:
        raise NotAnUpgrade(
            431, "head_too_large", f"the request head is over {MAX_HEAD_BYTES} bytes"
        )
    return -1


def parse_head(head: bytes) -> RequestHead:
    """The request whose head is ``head`` (up to and including its blank line)."""
    lines = head[:-4].decode("utf-8", "surrogateescape").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1].startswith("/"):
        raise NotAnUpgrade(400, "bad_request", "the request line is not METHOD /path HTTP/1.x")
    method, target, protocol = parts
    if protocol not in ("HTTP/1.1", "HTTP/1.0"):
        raise NotAnUpgrade(400, "bad_request", "the request line's protocol is not HTTP/1.0 or 1.1")
    if len(lines) - 1 > MAX_HEADERS:
        raise NotAnUpgrade(431, "head_too_large", f"more than {MAX_HEADERS} headers")
    pairs = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise NotAnUpgrade(400, "bad_request", "a header line is not name: value")
        pairs.append((name, value.strip(" \t")))
    headers = CIMultiDict(pairs)
    if headers.get("Transfer-Encoding") or headers.get("Content-Length", "0") != "0":
        raise NotAnUpgrade(400, "bad_request", "a WebSocket upgrade carries no body")
    path, _, query = target.partition("#")[0].partition("?")
    version = (1, 1) if protocol == "HTTP/1.1" else (1, 0)
    return RequestHead(method, path, query, version, CIMultiDictProxy(headers))


def http_answer(status: int, headers: dict[str, str], body: bytes) -> bytes:
    """A whole HTTP/1.1 answer that ends the connection (``Connection: close``); the
    headers' names and values are ASCII the gateway chose (a refusal's reason included)."""
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += (f"{name}: {value}" for name, value in headers.items())
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body
