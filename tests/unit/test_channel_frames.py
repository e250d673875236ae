"""Channel frames of protocol v1: requests parse or are refused with a reason and their id;
a publication's frames are made once and read back as the documented JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.core.channel_frames import (
    ChannelError,
    ChannelRequest,
    PublicationFrames,
    Refused,
    RequestKind,
    Since,
    error,
    parse_request,
    presence_change,
    reply,
    subscribed,
    unsubscribed,
)
from sidecar.core.ws_frames import OP_BINARY, OP_TEXT, server_frame
from wsfleet.channels.messages import Publication


def test_requests_parse_to_what_they_ask() -> None:
    assert parse_request({"type": "subscribe", "id": 1, "channel": "chat:1"}) == ChannelRequest(
        RequestKind.SUBSCRIBE, 1, "chat:1"
    )
    since = {"type": "subscribe", "id": 2, "channel": "c", "since": {"offset": 7, "epoch": "ab"}}
    assert parse_request(since).since == Since(7, "ab")
    publish = parse_request({"type": "publish", "id": 3, "channel": "c", "data": "hé"})
    assert (publish.data, publish.binary) == ("hé".encode(), False)
    binary = parse_request({"type": "publish", "id": 4, "channel": "c", "data_b64": "AAE="})
    assert (binary.data, binary.binary) == (b"\x00\x01", True)
    assert parse_request({"type": "presence", "id": 5, "channel": "c"}).kind is RequestKind.PRESENCE


@pytest.mark.parametrize(
    ("body", "code", "request_id"),
    [
        ({"type": "subscribe", "channel": "c"}, ChannelError.BAD_REQUEST, 0),
        ({"type": "subscribe", "id": True, "channel": "c"}, ChannelError.BAD_REQUEST, 0),
        ({"type": "subscribe", "id": 0, "channel": "c"}, ChannelError.BAD_REQUEST, 0),
        ({"type": "subscribe", "id": 2**53, "channel": "c"}, ChannelError.BAD_REQUEST, 0),
        ({"type": "subscribe", "id": 1, "channel": "a b"}, ChannelError.BAD_CHANNEL, 1),
        ({"type": "subscribe", "id": 1, "channel": "x" * 256}, ChannelError.BAD_CHANNEL, 1),
        ({"type": "subscribe", "id": 1, "channel": "{tag}"}, ChannelError.BAD_CHANNEL, 1),
        ({"type": "subscribe", "id": 1}, ChannelError.BAD_CHANNEL, 1),
        (
            {"type": "subscribe", "id": 1, "channel": "c", "since": {"offset": -1, "epoch": ""}},
            ChannelError.BAD_REQUEST,
            1,
        ),
        ({"type": "subscribe", "id": 1, "channel": "c", "since": 5}, ChannelError.BAD_REQUEST, 1),
        ({"type": "publish", "id": 9, "channel": "c"}, ChannelError.BAD_REQUEST, 9),
        (
            {"type": "publish", "id": 9, "channel": "c", "data_b64": "!"},
            ChannelError.BAD_REQUEST,
            9,
        ),
        (
            {"type": "publish", "id": 9, "channel": "c", "data": "\ud800"},
            ChannelError.BAD_REQUEST,
            9,
        ),
    ],
)
def test_a_bad_request_is_refused_with_its_reason_and_id(
    body: dict[str, Any], code: ChannelError, request_id: int
) -> None:
    with pytest.raises(Refused) as refused:
        parse_request(body)
    assert refused.value.code is code and refused.value.request_id == request_id
    frame = json.loads(refused.value.frame())
    assert frame["type"] == "error" and frame["code"] == code.value and frame["message"]
    assert frame.get("id", 0) == request_id


def test_answers_read_back_as_documented() -> None:
    assert json.loads(subscribed(1, "c", "ab", 7, True, True, 2)) == {
        "type": "subscribed",
        "id": 1,
        "channel": "c",
        "epoch": "ab",
        "offset": 7,
        "recoverable": True,
        "recovered": True,
        "missed": 2,
    }
    server = json.loads(subscribed(0, "c", "", 0, False, False, 0))
    assert server["server"] is True and "id" not in server
    assert json.loads(unsubscribed(3, "c", "client")) == {
        "type": "unsubscribed",
        "id": 3,
        "channel": "c",
        "reason": "client",
    }
    assert json.loads(reply(4, {"offset": 1})) == {
        "type": "reply",
        "id": 4,
        "result": {"offset": 1},
    }
    assert json.loads(error(0, ChannelError.UNAVAILABLE, "x"))["code"] == "unavailable"
    join = json.loads(presence_change("c", True, b'{"user":"u"}'))
    assert join == {"type": "join", "channel": "c", "info": {"user": "u"}}


def test_a_publication_is_framed_once_for_every_subscriber() -> None:
    frames = PublicationFrames(
        Publication("chat:1", 5, "e", 'hé "x"'.encode(), False, b'{"user":"a"}')
    )
    assert json.loads(frames.v1) == {
        "type": "pub",
        "channel": "chat:1",
        "offset": 5,
        "data": 'hé "x"',
        "info": {"user": "a"},
    }
    assert frames.v1 is frames.v1  # made once
    assert frames.v1_websocket == server_frame(OP_TEXT, frames.v1)
    assert frames.v1_websocket is frames.v1_websocket
    assert frames.raw_websocket == server_frame(OP_TEXT, 'hé "x"'.encode())
    binary = PublicationFrames(Publication("c", 0, "", b"\xff\x00", True))
    assert json.loads(binary.v1)["data_b64"] == "/wA="
    assert binary.raw_websocket == server_frame(OP_BINARY, b"\xff\x00")
