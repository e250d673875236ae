"""Through Envoy and real gateways: the routing user is read exactly as Envoy hashes it
(or refused), bytes that are not UTF-8 never become a routing key, a cseq beyond 2**53 - 1
is a bad frame, and an expired token sends nothing more."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.helpers import until
from tests.v1_client import V1Client
from wsfleet.headers import REFUSAL_HEADER
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0  # a bound, never a measure


async def refusal(fleet: LocalFleet, query: str, headers: CIMultiDict[str]) -> tuple[int, str]:
    """The status and refusal reason of an upgrade through Envoy (query sent as it is)."""
    url = URL(f"{fleet.client_url}?{query}", encoded=True)
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as refused:
            assert refused.headers is not None
            return refused.status, refused.headers.get(REFUSAL_HEADER, "").split(":")[0]
        await ws.close()
        return 101, ""


@pytest.mark.parametrize("user", ["%61lice", "al%69ce", "alic%65", "al+ice"])
async def test_a_percent_encoded_routing_user_is_refused(
    two_gateways: LocalFleet, user: str
) -> None:
    """Envoy hashes ``%61lice`` as it is, so it would land on another gateway than
    ``alice`` while the gateway read ``alice``."""
    token = two_gateways.token("alice")
    headers = CIMultiDict({"Authorization": f"Bearer {token}"})
    assert await refusal(two_gateways, f"user={user}", headers) == (400, "user_not_canonical")
    assert await refusal(two_gateways, "user=alice", headers) == (101, "")  # as it is: in


async def test_a_routing_header_sent_twice_is_refused(two_gateways: LocalFleet) -> None:
    token = two_gateways.token("alice")
    headers = CIMultiDict(
        [("Authorization", f"Bearer {token}"), ("x-user-id", "alice"), ("x-user-id", "alice")]
    )
    assert await refusal(two_gateways, "user=alice", headers) == (400, "user_ambiguous")


async def test_a_routing_header_that_is_not_utf8_is_refused_before_the_upgrade(
    two_gateways: LocalFleet,
) -> None:
    """Bytes that are not UTF-8 reach the gateway as lone surrogates: never a user id (nor,
    unit-tested, a backend routing key)."""
    public = urlsplit(two_gateways.client_url)
    assert public.hostname is not None and public.port is not None
    reader, writer = await asyncio.open_connection(public.hostname, public.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Authorization: Bearer " + two_gateways.token("alice").encode() + b"\r\n"
            b"x-user-id: al\xefce\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    assert f"{REFUSAL_HEADER}: user_not_canonical".encode() in head.lower()


async def test_a_cseq_beyond_two_to_the_53_is_a_bad_frame_and_the_session_goes_on(
    one_gateway: LocalFleet,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = await V1Client.connect(one_gateway, http, "carol")
        for cseq, text in ((1, "first"), (2**64, "huge"), (2, "second")):
            await client.ws.send_str(json.dumps({"type": "message", "cseq": cseq, "data": text}))
        messages = await client.wait("message", 2)
        notices = client.of("notice")
        assert not client._reader.done()  # still open
        await client.close()
    # the answer to "huge" comes before the echo of "second" (one ordered path)
    assert [m["data"] for m in messages] == ["first", "second"]
    assert [n["reason"].split(":")[0] for n in notices] == ["bad_frame"]


async def test_a_message_sent_after_the_token_expired_is_not_echoed_but_closes_4401(
    one_gateway: LocalFleet,
) -> None:
    expires_at = int(time.time()) + 4  # long enough to connect on a busy machine
    async with aiohttp.ClientSession() as http:
        client = await V1Client.connect(one_gateway, http, "dave", claims={"exp": expires_at})
        await client.ws.send_str(json.dumps({"type": "message", "cseq": 1, "data": "in time"}))
        assert [m["data"] for m in await client.wait("message")] == ["in time"]
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)  # until exp has passed
        await client.ws.send_str(json.dumps({"type": "message", "cseq": 2, "data": "too late"}))
        # the barrier: the close ends the socket; an echo would have come before it
        await until(lambda: client._reader.done(), DEADLINE_S, "the close")
    assert client.close_code == 4401
    assert [m["data"] for m in client.of("message")] == ["in time"]
