"""The public port reads a WebSocket upgrade's head itself: who serves a connection is
decided on its first bytes, the head is bounded and must be well formed, and a refusal is
a whole HTTP answer that ends the connection."""

from __future__ import annotations

import pytest

from sidecar.core.http_head import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    Route,
    head_end,
    http_answer,
    parse_head,
    route,
)
from sidecar.core.ws_handshake import NotAnUpgrade

UPGRADE = (
    b"GET /ws?user=al%20ice&x=1 HTTP/1.1\r\n"
    b"Host: gw\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"X-Many: one\r\n"
    b"x-many: two\r\n"
    b"\r\n"
)


def bad(head: bytes) -> tuple[int, str]:
    with pytest.raises(NotAnUpgrade) as refused:
        parse_head(head)
    return refused.value.status, refused.value.reason


def test_a_get_of_the_websocket_path_is_read_by_the_port_and_the_rest_goes_to_aiohttp() -> None:
    assert route(b"GET /ws HTTP/1.1\r\n") is Route.NATIVE
    assert route(b"GET /ws?user=a HTTP/1.1\r\n") is Route.NATIVE
    for other in (b"GET /wsx HTTP/1.1", b"GET /sse?u=a ", b"POST /ws HTTP", b"GET /ws/ HTTP"):
        assert route(other) is Route.AIOHTTP, other
    assert route(b"GET http://h/ws HTTP/1.1") is Route.AIOHTTP  # absolute form: aiohttp's
    assert route(b"PUT") is Route.AIOHTTP  # known from the first bytes
    for prefix in (b"", b"G", b"GET", b"GET /w", b"GET /ws"):
        assert route(prefix) is None, prefix  # could still be GET /ws


def test_the_head_is_read_with_its_query_as_sent_and_every_header_value() -> None:
    end = head_end(UPGRADE + b"\x81\x85frame")
    assert end == len(UPGRADE)  # what follows (early frames) is not the head's
    head = parse_head(UPGRADE[:end])
    assert (head.method, head.path, head.raw_query) == ("GET", "/ws", "user=al%20ice&x=1")
    assert head.version == (1, 1)
    assert head.headers["upgrade"] == "websocket"
    assert head.headers.getall("X-MANY") == ["one", "two"]


def test_header_bytes_that_are_not_utf8_are_read_as_lone_surrogates_like_aiohttp() -> None:
    head = parse_head(b"GET /ws HTTP/1.1\r\nX-User-Id: al\xffice\r\n\r\n")
    assert head.headers["x-user-id"] == "al\udcffice"
    assert not head.headers["x-user-id"].isprintable()  # the admission refuses it


def test_the_end_of_the_head_is_found_across_reads_from_where_the_last_search_stopped() -> None:
    buffer = b""
    ends = []
    start = 0
    for byte in UPGRADE:  # one byte per read, the worst a client can do
        buffer += bytes([byte])
        ends.append(head_end(buffer, start))
        start = max(0, len(buffer) - 3)
    assert ends[-1] == len(UPGRADE)
    assert set(ends[:-1]) == {-1}


def test_a_head_past_its_bound_is_refused_with_431() -> None:
    huge = b"GET /ws HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(NotAnUpgrade) as refused:
        head_end(huge)
    assert (refused.value.status, refused.value.reason) == (431, "head_too_large")
    many = b"GET /ws HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n"
    assert bad(many) == (431, "head_too_large")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ws\r\n\r\n",  # no protocol
        b"GET  /ws HTTP/1.1\r\n\r\n",  # two spaces
        b"GET /ws HTTP/2.0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /ws HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",  # obs-fold
        b"GET /ws HTTP/1.1\r\nContent-Length: 5\r\n\r\n",  # a body would be read as frames
        b"GET /ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_a_malformed_head_or_one_with_a_body_is_refused_with_400(head: bytes) -> None:
    assert bad(head) == (400, "bad_request")


def test_http_1_0_is_read_and_left_to_the_handshake_to_refuse() -> None:
    assert parse_head(b"GET /ws HTTP/1.0\r\n\r\n").version == (1, 0)


def test_an_answer_is_whole_sized_and_ends_the_connection() -> None:
    answer = http_answer(431, {"X-Why": "too big"}, b'{"error": "x"}')
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"X-Why: too big" in lines
    assert b"Content-Length: 14" in lines
    assert b"Connection: close" in lines
    assert body == b'{"error": "x"}'
