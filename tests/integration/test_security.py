"""Adversarial clients against the real fleet: each probes as an attacker would and the
fleet must cut them, bound them or refuse them, without losing anything for others."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
from aiohttp import web

from tests.helpers import masked_text, open_ws, raw_upgrade, unlimited_session
from tests.policies import websocket_policy
from wsfleet.registry import PodRecord
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet_client.client import Client
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.ports import free_port

pytestmark = pytest.mark.integration

QUICK_HEADERS = websocket_policy(listener={"request_headers_timeout_s": 1})
DEADLINE_S = 30.0  # far beyond every timeout these tests set: a bound, never a measure


async def _closed_by_server(host: str, port: int, first_bytes: bytes) -> bool:
    """Connect, send ``first_bytes`` (maybe nothing), then wait for the server to close.
    True when it did within the deadline."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if first_bytes:
            writer.write(first_bytes)
            await writer.drain()
        try:
            async with asyncio.timeout(DEADLINE_S):
                while await reader.read(4096):
                    pass  # an error response may come first; the close is what counts
        except TimeoutError:
            return False
        return True
    finally:
        writer.close()


async def test_envoy_cuts_a_request_whose_headers_never_finish(
    fleet_factory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(QUICK_HEADERS)
    fleet: LocalFleet = await fleet_factory(policy_path=policy, sidecars=1)
    public = urlsplit(fleet.client_url)
    assert public.hostname is not None and public.port is not None
    slowloris = b"GET /ws?user=alice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    assert await _closed_by_server(public.hostname, public.port, slowloris)
    async with unlimited_session() as session:  # and everyone else is served meanwhile
        ws, _ = await open_ws(fleet, session, "bob")
        await ws.send_str("hi")
        assert (await ws.receive(timeout=10)).data == "hi"
        await ws.close()


async def test_a_gateway_cuts_silent_and_slowloris_connections_after_its_idle_deadline(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1, sidecar_args=("--http-idle-timeout", "1"))
    sidecar = fleet.info.sidecars["sidecar-1"]
    silent = _closed_by_server("127.0.0.1", sidecar.port, b"")
    slowloris = _closed_by_server(
        "127.0.0.1", sidecar.port, b"GET /ws?user=alice HTTP/1.1\r\nHost: x\r\n"
    )
    assert await asyncio.gather(silent, slowloris) == [True, True]


async def test_a_deeply_nested_post_body_is_a_bad_frame_and_the_session_lives_on(
    one_gateway,
) -> None:
    fleet: LocalFleet = one_gateway
    poll_url = fleet.client_url.replace("ws://", "http://").replace("/ws", "/poll")
    auth = {"user": "alice", "access_token": fleet.token("alice")}
    async with unlimited_session() as session:
        async with session.get(poll_url, params={**auth, "wait": "0"}) as response:
            session_id = (await response.json())["session"]
        send = {**auth, "session": session_id}
        nested = b"[" * 60_000 + b"]" * 60_000
        async with session.post(f"{poll_url}/send", params=send, data=nested) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad_frame"
        frame = {"type": "message", "cseq": 1, "data": "still here"}
        async with session.post(f"{poll_url}/send", params=send, json=frame) as response:
            assert response.status == 202
        async with session.get(poll_url, params={**send, "wait": "10"}) as response:
            frames = (await response.json())["frames"]
        assert [f["data"] for f in frames if f["type"] == "message"] == ["still here"]


async def _capture_admin_calls(seen: list[str]) -> tuple[web.AppRunner, int]:
    """A listener posing as a pod's admin API; records the bearer tokens it is sent."""

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"pod_id": "x", "started": True, "open": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_the_control_plane_ignores_forged_pods_and_never_hands_out_its_admin_token(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    seen: list[str] = []
    runner, port = await _capture_admin_calls(seen)
    intruder = RedisRegistry(fleet.info.redis_url)  # can write Redis, has no registry key
    signed = RedisRegistry(fleet.info.redis_url, signer=fleet.pod_signer())
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    try:
        forged = PodRecord("forged", "gateways", "127.0.0.1", port, port, region="evil")
        await intruder.put_pod(forged, ttl_s=60)
        async with unlimited_session() as session:
            drain = f"{fleet.admin_url}/drain"
            async with session.post(drain, json={"region": "evil"}, headers=headers) as response:
                assert response.status == 404  # no pod of that region that can be trusted
            async with session.get(f"{fleet.admin_url}/pods", headers=headers) as response:
                assert "forged" not in {pod["pod_id"] for pod in (await response.json())["pods"]}
            assert seen == []
            metrics = await (await session.get(f"{fleet.admin_url}/metrics")).text()
            assert "wsfleet_xds_rejected_pod_records_total 0.0" not in metrics
            # a pod that proves itself (signed) is called with its own token, never with
            # the operators' admin token
            pod = PodRecord("signed", "gateways", "127.0.0.1", port, port, region="lab")
            await signed.put_pod(pod, ttl_s=60)
            async with session.post(drain, json={"pod": "signed"}, headers=headers) as response:
                assert response.status in (200, 202), await response.text()
        assert seen and all(s == f"Bearer {fleet.pod_signer().admin_token('signed')}" for s in seen)
        assert all(fleet.admin_token not in s for s in seen)
    finally:
        await intruder.close()
        await signed.close()
        await runner.cleanup()


async def _v1_socket(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        f"{fleet.client_url}?user={user}",
        headers={"Authorization": f"Bearer {token}"},
        protocols=("wsfleet.v1",),
    )
    welcome = await ws.receive_json(timeout=10)
    assert welcome["type"] == "welcome"
    return ws


async def _next_notice(ws: aiohttp.ClientWebSocketResponse) -> str:
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == "notice":
            return str(frame["reason"])


async def test_a_session_outlives_its_token_only_if_the_client_refreshes_it(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=1, sidecar_args=("--heartbeat-interval", "0.5")
    )
    async with unlimited_session() as session:
        # all start with tokens that expire in 6 s; the SDK client's source gives fresh
        # ones, it refreshes by itself; bob refreshes by hand; alice does not
        sdk = Client(
            fleet.client_url,
            "carol",
            lambda: fleet.token("carol", ttl_s=6),
            session=session,
            transports=("websocket",),
        )
        sdk.start()
        await asyncio.wait_for(sdk.connected.wait(), 10)
        kept = await _v1_socket(fleet, session, "bob", fleet.token("bob", ttl_s=6))
        lapsing = await _v1_socket(fleet, session, "alice", fleet.token("alice", ttl_s=6))
        await kept.send_json({"type": "refresh", "token": fleet.token("alice", ttl_s=60)})
        assert await _next_notice(kept) == "refresh_refused: user_mismatch"
        await kept.send_json({"type": "refresh", "token": "not-a-jwt"})
        assert await _next_notice(kept) == "refresh_refused: malformed"
        await kept.send_json({"type": "refresh", "token": fleet.token("bob", ttl_s=60)})
        assert await _next_notice(kept) == "token_refreshed"
        closed = await lapsing.receive(timeout=DEADLINE_S)
        assert closed.type is aiohttp.WSMsgType.CLOSE
        assert (lapsing.close_code, closed.extra) == (4401, "token expired")
        # the sweep that closed the lapsed session passed the refreshed one by: it lives on
        await kept.send_json({"type": "message", "cseq": 1, "data": "still here"})
        while (frame := await kept.receive_json(timeout=10))["type"] != "message":
            pass
        assert frame["data"] == "still here"
        await kept.close()
        assert sdk.stats.closes == [] and sdk.connected.is_set()
        await sdk.send("refreshed by itself")
        assert (await asyncio.wait_for(anext(aiter(sdk)), 10)).data == "refreshed by itself"
        await sdk.close()


async def test_a_second_long_poll_of_a_session_replaces_the_first(one_gateway) -> None:
    """Polls piling up on one session would each hold a request open: only the newest
    waits, the older one is answered at once with nothing."""
    fleet: LocalFleet = one_gateway
    poll_url = fleet.client_url.replace("ws://", "http://").replace("/ws", "/poll")
    auth = {"user": "alice", "access_token": fleet.token("alice")}
    async with unlimited_session() as session:
        async with session.get(poll_url, params={**auth, "wait": "0"}) as response:
            session_id = (await response.json())["session"]
        params = {**auth, "session": session_id, "wait": "50"}

        async def poll() -> list[dict[str, object]]:
            async with session.get(poll_url, params=params) as response:
                assert response.status == 200
                frames: list[dict[str, object]] = (await response.json())["frames"]
                return frames

        polls = [asyncio.ensure_future(poll()) for _ in range(5)]
        # the first four are answered, empty, as newer ones arrive; the newest waits
        done, waiting = await asyncio.wait(polls, timeout=DEADLINE_S, return_when="FIRST_COMPLETED")
        while len(waiting) > 1:
            more, waiting = await asyncio.wait(
                waiting, timeout=DEADLINE_S, return_when="FIRST_COMPLETED"
            )
            assert more, "an older poll was left waiting"
            done |= more
        assert all(task.result() == [] for task in done)
        frame = {"type": "message", "cseq": 1, "data": "hello"}
        send = {**auth, "session": session_id}
        async with session.post(f"{poll_url}/send", params=send, json=frame) as response:
            assert response.status == 202
        [newest] = waiting
        frames = await asyncio.wait_for(newest, DEADLINE_S)
        assert [f["data"] for f in frames if f["type"] == "message"] == ["hello"]


async def test_by_default_one_user_holds_at_most_100_connections(one_gateway) -> None:
    fleet: LocalFleet = one_gateway
    async with unlimited_session() as session:
        held = [
            ws
            for ws, _ in await asyncio.gather(
                *(open_ws(fleet, session, "greedy") for _ in range(100))
            )
        ]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_ws(fleet, session, "greedy")
        assert refused.value.status == 429
        other, _ = await open_ws(fleet, session, "modest")  # nobody else pays for it
        await asyncio.gather(*(ws.close() for ws in [*held, other]))


SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


async def _ads_answer(
    port: int, credentials: grpc.ChannelCredentials | None, node_id: str, region: str
) -> str:
    """``"answered"`` if the control plane sent clusters to this client, else the gRPC
    status it got."""
    from xds_server import type_urls
    from xds_server.envoy_types import DiscoveryRequest, message_class

    node = message_class("envoy.config.core.v3.Node")(id=node_id, cluster="probe")
    node.locality.region = region
    request = DiscoveryRequest(type_url=type_urls.CLUSTER, node=node).SerializeToString()
    address = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(
            address, credentials, options=[("grpc.ssl_target_name_override", "xds-server")]
        )
    )
    async with channel:
        call = channel.stream_stream(
            SOTW_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )(iter([request]))
        try:
            reply = await asyncio.wait_for(call.read(), DEADLINE_S)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        finally:
            call.cancel()
    return "answered" if reply is not grpc.aio.EOF else "EOF"


async def test_xds_is_served_only_to_envoys_that_prove_the_node_they_claim(
    fleet_factory,
) -> None:
    from wsfleet import fleet_ca

    fleet: LocalFleet = await fleet_factory(sidecars=1)
    port = fleet.info.xds_grpc_port
    ca = fleet_ca.ca_file(fleet.state_dir).read_bytes()
    envoy = fleet_ca.ensure_node_pair(fleet.state_dir, "envoy-1", "local")
    proven = grpc.ssl_channel_credentials(ca, envoy.key.read_bytes(), envoy.cert.read_bytes())
    assert await _ads_answer(port, None, "envoy-1", "local") == "UNAVAILABLE"  # plain gRPC
    no_certificate = grpc.ssl_channel_credentials(ca)
    assert await _ads_answer(port, no_certificate, "envoy-1", "local") == "UNAVAILABLE"
    assert await _ads_answer(port, proven, "intruder", "local") == "PERMISSION_DENIED"
    assert await _ads_answer(port, proven, "envoy-1", "elsewhere") == "PERMISSION_DENIED"
    assert await _ads_answer(port, proven, "envoy-1", "local") == "answered"
    # a zone's certificate proves its zone's pods (a Deployment's pod names), nothing more
    assert await _ads_answer(port, proven, "envoy-1-7d9f8c6b5-x2k4q", "local") == "answered"
    assert await _ads_answer(port, proven, "envoy-1-x-7d9f8c6b5-x2k4q", "local") == (
        "PERMISSION_DENIED"
    )
    metrics = await _control_plane_metrics(fleet)
    assert "wsfleet_xds_refused_nodes_total 3.0" in metrics
    # and the fleet's own Envoy, proven, serves clients
    assert await fleet.round_trip("alice", "over mTLS") == "over mTLS"


async def _control_plane_metrics(fleet: LocalFleet) -> str:
    async with unlimited_session() as session, session.get(f"{fleet.admin_url}/metrics") as got:
        return await got.text()


async def test_by_default_a_client_flooding_frames_is_cut_and_others_are_served(
    one_gateway,
) -> None:
    fleet: LocalFleet = one_gateway
    async with unlimited_session() as session:
        flooder, _ = await open_ws(fleet, session, "flooder")
        other, _ = await open_ws(fleet, session, "other")

        async def flood() -> None:
            """As fast as this client can (far past 1,000 a second), reading as it goes
            like a real client: once the gateway's close frame is read, the client answers
            it and its next send fails. (A client that never reads could still be writing
            when the gateway's lingering close gives up, 5 s after its close frame, and
            the reset would drop that frame: on a busy machine 200,000 sends take that.)"""
            with contextlib.suppress(ConnectionError, RuntimeError):
                for n in range(200_000):
                    await flooder.send_str(f"f{n}")
                    if n % 100 == 99:
                        await asyncio.sleep(0)  # the receive below gets its turn

        sender = asyncio.ensure_future(flood())
        while (message := await flooder.receive(timeout=DEADLINE_S)).type is aiohttp.WSMsgType.TEXT:
            pass  # echoes of what got in before the cut
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        assert message.type is aiohttp.WSMsgType.CLOSE and flooder.close_code == 1008
        await other.send_str("still served")
        assert (await other.receive(timeout=10)).data == "still served"
        await other.close()


async def test_an_unmasked_frame_pipelined_with_the_handshake_is_refused_too(one_gateway) -> None:
    """Frames a client sends before the 101 (in the same write as its upgrade) reach the
    gateway's frame reader like any other: the 101, then the close with 1002. (Sent to
    the gateway's own port: Envoy holds such bytes back until the 101.)"""
    fleet: LocalFleet = one_gateway
    gateway = next(iter(fleet.info.sidecars.values()))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        raw_upgrade(fleet, "alice")
        + bytes((0x81, 8))
        + b"unmasked"  # no mask bit, no key: in the handshake's own write
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    assert head.startswith(b"HTTP/1.1 101"), head
    first = await asyncio.wait_for(reader.readexactly(2), DEADLINE_S)
    assert first[0] == 0x88  # a close frame, not an echo
    body = await asyncio.wait_for(reader.readexactly(first[1] & 0x7F), DEADLINE_S)
    assert int.from_bytes(body[:2], "big") == 1002 and body[2:] == b"unmasked frame"
    writer.close()


async def test_an_unmasked_client_frame_closes_the_connection_with_1002(one_gateway) -> None:
    """RFC 6455 5.1: every client frame is masked; aiohttp alone would echo this one."""
    fleet: LocalFleet = one_gateway
    public = urlsplit(fleet.client_url)
    assert public.hostname is not None and public.port is not None

    async def upgraded() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(public.hostname, public.port)
        writer.write(raw_upgrade(fleet, "alice"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        return reader, writer

    reader, writer = await upgraded()
    writer.write(masked_text(b"masked"))
    echo = await asyncio.wait_for(reader.readexactly(2 + 6), DEADLINE_S)
    assert echo == b"\x81\x06masked"
    writer.write(bytes((0x81, 8)) + b"unmasked")  # no mask bit, no key
    first = await asyncio.wait_for(reader.readexactly(2), DEADLINE_S)
    assert first[0] == 0x88  # a close frame, not an echo
    body = await asyncio.wait_for(reader.readexactly(first[1] & 0x7F), DEADLINE_S)
    assert int.from_bytes(body[:2], "big") == 1002 and body[2:] == b"unmasked frame"
    writer.close()
