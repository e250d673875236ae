"""The opening handshake (RFC 6455 section 4.2): the accept key, each refusal with its
status and reason, and the 101 the gateway writes itself."""

from __future__ import annotations

import pytest

from sidecar.core.ws_handshake import NotAnUpgrade, accept_key, switching_protocols

GOOD = {
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_the_accept_key_is_the_one_of_rfc_6455s_example() -> None:
    assert accept_key(GOOD, (1, 1)) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key({**GOOD, "Upgrade": "WebSocket"}, (2, 0))


@pytest.mark.parametrize(
    ("change", "version", "status", "reason"),
    [
        ({"Upgrade": ""}, (1, 1), 400, "not_websocket"),
        ({"Upgrade": "h2c"}, (1, 1), 400, "not_websocket"),
        ({}, (1, 0), 400, "http_version"),
        ({"Connection": "keep-alive"}, (1, 1), 400, "not_websocket"),
        ({"Sec-WebSocket-Version": "8"}, (1, 1), 426, "websocket_version"),
        ({"Sec-WebSocket-Key": ""}, (1, 1), 400, "bad_key"),
        ({"Sec-WebSocket-Key": "not base64!"}, (1, 1), 400, "bad_key"),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, (1, 1), 400, "bad_key"),  # 5 bytes, not 16
    ],
)
def test_each_request_that_is_not_an_upgrade_it_takes_is_refused_with_its_reason(
    change: dict[str, str], version: tuple[int, int], status: int, reason: str
) -> None:
    with pytest.raises(NotAnUpgrade) as refused:
        accept_key({**GOOD, **change}, version)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert refused.value.message


def test_the_101_carries_the_accept_key_and_the_chosen_headers_and_ends_the_head() -> None:
    answer = switching_protocols("KEY=", {"Sec-WebSocket-Protocol": "chat", "x-wsfleet-pod": "p1"})
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: KEY=\r\nSec-WebSocket-Protocol: chat\r\nx-wsfleet-pod: p1\r\n\r\n"
    )
