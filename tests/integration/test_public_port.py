"""The gateway's public port reads a WebSocket upgrade's head itself and hands every other
request to aiohttp: both kinds are served on one port, an upgrade on a connection that
carried other requests first is served too, and a head out of bounds gets its 4xx and the
close. Raw sockets to the gateway's own port (Envoy would fix or refuse some of these)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.helpers import masked_text, raw_connection, raw_upgrade, unlimited_session
from tests.v1_client import V1Client
from wsfleet.headers import POD_HEADER
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0  # a bound, never a measure


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP answer: its head and its body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), DEADLINE_S)
    return head, body


async def read_text_frame(reader: asyncio.StreamReader) -> bytes:
    first = await asyncio.wait_for(reader.readexactly(2), DEADLINE_S)
    assert first[0] == 0x81, first  # an unfragmented text frame
    return await asyncio.wait_for(reader.readexactly(first[1] & 0x7F), DEADLINE_S)


def to_gateway(
    fleet: LocalFleet,
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection to the (first) gateway's own port."""
    return raw_connection("127.0.0.1", next(iter(fleet.info.sidecars.values())).port)


async def test_an_upgrade_on_a_connection_that_served_other_requests_is_served(
    one_gateway,
) -> None:
    """A keep-alive connection (Envoy pools them) that carried a health check first, then an
    upgrade: aiohttp serves the first, the same handshake and frame layer the second."""
    fleet: LocalFleet = one_gateway
    async with to_gateway(fleet) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(body)["status"] == "ok"
        writer.write(raw_upgrade(fleet, "alice") + masked_text(b"after a health check"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert await read_text_frame(reader) == b"after a health check"  # the demo echoes


async def test_frames_sent_with_the_upgrade_are_read_after_the_handshake(one_gateway) -> None:
    fleet: LocalFleet = one_gateway
    async with to_gateway(fleet) as (reader, writer):
        writer.write(raw_upgrade(fleet, "bob") + masked_text(b"one") + masked_text(b"two"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert [await read_text_frame(reader), await read_text_frame(reader)] == [b"one", b"two"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET /ws HTTP/1.1\r\nX-Pad: " + b"a" * 40_000, 431, "head_too_large"),
        (b"GET /ws HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400, "bad_request"),
        (b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n", 400, "bad_request"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not_websocket"),
    ],
)
async def test_a_head_out_of_bounds_gets_its_4xx_with_a_reason_and_the_close(
    one_gateway, request_bytes: bytes, status: int, reason: str
) -> None:
    fleet: LocalFleet = one_gateway
    async with to_gateway(fleet) as (reader, writer):
        writer.write(request_bytes)
        head, body = await read_answer(reader)
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        assert b"Connection: close" in head
        assert json.loads(body)["error"] == reason
        assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""  # then closed


async def test_other_paths_and_methods_on_the_public_port_stay_aiohttps(one_gateway) -> None:
    """A request the port does not read itself gets aiohttp's answer, whole."""
    fleet: LocalFleet = one_gateway
    async with to_gateway(fleet) as (reader, writer):
        writer.write(b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        head, _ = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 405"), head  # /ws takes GET only
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 404"), head  # and the connection lived on


async def test_a_refused_upgrade_s_answer_survives_what_the_client_sent_after_it(
    one_gateway,
) -> None:
    """The gateway stops reading while it checks the token: bytes the client sent behind
    its upgrade are still unread when the refusal is written. Closing then would reset
    the connection and lose the answer; the port closes lingering instead."""
    fleet: LocalFleet = one_gateway
    async with to_gateway(fleet) as (reader, writer):
        refused = raw_upgrade(fleet, "alice").replace(b"Bearer ", b"Bearer not-a-token")
        writer.write(refused + masked_text(b"x" * 100) * 2_000)  # ~200 KB behind it
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert json.loads(body)["error"] == "malformed"
        assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""


async def test_a_plain_101_names_the_pod_and_a_v1_session_learns_it_from_its_welcome(
    one_gateway,
) -> None:
    """Through Envoy: the plain WebSocket's 101 carries x-wsfleet-pod; the v1 101 leaves it
    out (Envoy would hold it for the connection's life) and the welcome frame names it."""
    fleet: LocalFleet = one_gateway
    [pod] = fleet.info.sidecars
    async with unlimited_session() as http:
        plain = await http.ws_connect(
            f"{fleet.client_url}?user=alice",
            headers={"Authorization": f"Bearer {fleet.token('alice')}"},
        )
        assert plain._response is not None
        assert plain._response.headers.get(POD_HEADER) == pod
        await plain.close()
        v1 = await V1Client.connect(fleet, http, "bob")
        assert v1.ws.protocol == "wsfleet.v1"
        assert v1.ws._response is not None and POD_HEADER not in v1.ws._response.headers
        assert v1.pod == pod  # from the welcome
        await v1.ws.close()
