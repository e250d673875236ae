"""The HTTP fallbacks (SSE, long polling) against clients that push their limits: each is
refused or cut, while another user on the same pod is served; and their sessions stay
counted, listed and removable for as long as they live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import open_ws, unlimited_session, until
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0  # a bound, never a measure
ECHO_BOUND_S = 5.0  # a bystander's echo while an abuser floods (the issue saw 3.6 s stalls)
MiB = 1 << 20
POLL_BUFFER_BYTES = MiB  # the default --poll-buffer-bytes
MAX_MESSAGE_BYTES = 64 * 1024  # the default --max-message-bytes


def _http(fleet: LocalFleet, path: str) -> str:
    return fleet.client_url.replace("ws://", "http://").replace("/ws", path)


def _auth(fleet: LocalFleet, user: str) -> dict[str, str]:
    return {"user": user, "access_token": fleet.token(user)}


async def _poll_session(fleet: LocalFleet, session: aiohttp.ClientSession, user: str) -> str:
    async with session.get(_http(fleet, "/poll"), params={**_auth(fleet, user), "wait": "0"}) as r:
        assert r.status == 200, await r.text()
        session_id: str = (await r.json())["session"]
        return session_id


@contextlib.asynccontextmanager
async def _sse_session(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str
) -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    """An open SSE stream: its session id, and a queue of the frames it receives."""
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    response = await session.get(_http(fleet, "/sse"), params=_auth(fleet, user))
    assert response.status == 200

    async def read() -> None:
        async for line in response.content:
            if line.startswith(b"data: "):
                await frames.put(json.loads(line[6:]))

    reader = asyncio.ensure_future(read())
    try:
        welcome = await asyncio.wait_for(frames.get(), DEADLINE_S)
        assert welcome["type"] == "welcome"
        yield welcome["session"], frames
    finally:
        reader.cancel()
        response.close()


@contextlib.asynccontextmanager
async def _bystander(
    fleet: LocalFleet, session: aiohttp.ClientSession, user: str
) -> AsyncIterator[list[float]]:
    """Another user echoing over a WebSocket on the same pod the whole time: yields the
    round trips measured so far (checked at the end: every one within the bound)."""
    ws, _ = await open_ws(fleet, session, user)
    rtts: list[float] = []
    stop = asyncio.Event()

    async def echo() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            await ws.send_str(f"ping {n}")
            assert (await ws.receive(timeout=DEADLINE_S)).data == f"ping {n}"
            rtts.append(time.monotonic() - started)
            await asyncio.sleep(0.05)

    task = asyncio.ensure_future(echo())
    try:
        yield rtts
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
        await ws.close()
    assert rtts, "the bystander was never answered"
    assert max(rtts) < ECHO_BOUND_S, f"a bystander's echo took {max(rtts):.2f} s"


async def _post(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, params=params, data=body) as response:
        answer = await response.json(content_type=None)
        return response.status, answer


async def _slow_consumer_closes(fleet: LocalFleet) -> float:
    """The pod's count of 1013 closes (only the hoarder of this module is cut so)."""
    port = fleet.info.sidecars["sidecar-1"].admin_port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('wsfleet_gateway_closes_total{code="1013"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_poll_client_that_never_acknowledges_is_cut_holding_a_bounded_buffer(
    one_gateway,
) -> None:
    fleet: LocalFleet = one_gateway
    cut_before = await _slow_consumer_closes(fleet)
    async with unlimited_session() as session, _bystander(fleet, session, "bounds-bystander-1"):
        session_id = await _poll_session(fleet, session, "hoarder")
        params = {**_auth(fleet, "hoarder"), "session": session_id}
        # every poll says "I have nothing" (last_seq=0): everything is kept for it
        hoarding = {**params, "last_seq": "0", "wait": "0"}
        frame = json.dumps({"type": "message", "data": "y" * 60_000}).encode()
        answers: list[list[dict[str, Any]]] = []
        sizes: list[int] = []

        async def poll() -> list[dict[str, Any]]:
            async with session.get(_http(fleet, "/poll"), params=hoarding) as response:
                body = await response.read()
            assert response.status == 200, body
            sizes.append(len(body))
            answers.append(json.loads(body)["frames"])
            return answers[-1]

        async def send() -> bool:
            status, _ = await _post(session, _http(fleet, "/poll/send"), params, frame)
            assert status in (202, 429)  # 429: past the byte rate, tried again later
            return status == 202

        async def full() -> bool:  # echoes of what it posts, until the buffer is full
            await send()
            await poll()
            return sizes[-1] > POLL_BUFFER_BYTES + 100  # (the answer's own JSON is < 100 B)

        await until(full, DEADLINE_S, "the hoarder's buffer full")
        await until(send, DEADLINE_S, "one more message for it")  # waits for room: none comes

        def cut(frames: list[dict[str, Any]]) -> bool:  # its close, kept for its next poll
            return any(f["type"] == "close" for f in frames)

        await until(lambda: _sleep_then(poll(), cut), DEADLINE_S, "the hoarder cut")
        assert await _slow_consumer_closes(fleet) > cut_before
        closes = [f for frames in answers for f in frames if f["type"] == "close"]
        assert closes and all(f["code"] == 1013 for f in closes), closes
        # no answer (and so no buffer) ever held more than its bound and one frame
        assert max(sizes) <= POLL_BUFFER_BYTES + 2 * len(frame)


async def _sleep_then(
    answer: Awaitable[list[dict[str, Any]]], check: Callable[[list[dict[str, Any]]], bool]
) -> bool:
    await asyncio.sleep(0.1)  # a poll every tenth of a second, not a busy loop
    return check(await answer)


@pytest.mark.parametrize("transport", ["sse", "poll"])
async def test_posts_over_the_limits_are_refused_whole_and_others_are_served(
    one_gateway, transport: str
) -> None:
    fleet: LocalFleet = one_gateway
    user = f"poster-{transport}"
    send_url = _http(fleet, f"/{transport}/send")
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(unlimited_session())
        await stack.enter_async_context(_bystander(fleet, session, f"bounds-bystander-{transport}"))
        if transport == "sse":
            session_id, frames = await stack.enter_async_context(_sse_session(fleet, session, user))
        else:
            session_id, frames = await _poll_session(fleet, session, user), None
        params = {**_auth(fleet, user), "session": session_id}

        zeros = b"[" + b",".join([b"0"] * (MiB // 2 - 1)) + b"]"  # 524,287 frames in 1 MiB
        many = b"[" + b",".join([b"0"] * 60_000) + b"]"  # fits the body cap: too many frames
        answers = await asyncio.gather(
            *(_post(session, send_url, params, body) for body in (zeros, many) * 4)
        )
        for status, answer in answers:
            assert status == 413 and answer["error"] in ("too_big", "too_many_frames"), answer
        # the session lives on, and what it sends after its refusals arrives
        message = json.dumps({"type": "message", "cseq": 1, "data": "still here"}).encode()
        await until(
            lambda: _accepted(session, send_url, params, message), DEADLINE_S, "a post accepted"
        )
        assert await _received(fleet, session, params, frames) == "still here"

        # past the byte rate (4 MiB/s; whitespace counts too): refused whole (429), and at
        # the default --rate-limit-action close the session is closed with 1008, as a
        # WebSocket's is; later POSTs find no session
        padded = b"[" + b" " * 200_000 + b'{"type":"ping"}]'
        statuses = [(await _post(session, send_url, params, padded))[0] for _ in range(40)]
        first_refusal = statuses.index(429)
        assert set(statuses[:first_refusal]) <= {202}, statuses
        assert set(statuses[first_refusal + 1 :]) <= {409}, statuses
        assert await _close_code(fleet, session, params, frames) == 1008


async def _close_code(
    fleet: LocalFleet,
    session: aiohttp.ClientSession,
    params: dict[str, str],
    frames: asyncio.Queue[dict[str, Any]] | None,
) -> int:
    """The code of the close frame the session's client gets (SSE stream or a poll)."""
    if frames is not None:
        return int((await asyncio.wait_for(_next_of_type(frames, "close"), DEADLINE_S))["code"])
    async with session.get(_http(fleet, "/poll"), params={**params, "wait": "5"}) as r:
        closes = [f for f in (await r.json())["frames"] if f["type"] == "close"]
    assert closes, "no close frame for the poll"
    return int(closes[-1]["code"])


async def _accepted(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], body: bytes
) -> bool:
    status, answer = await _post(session, url, params, body)
    assert status in (202, 429), answer  # 429 while the byte budget refills
    return status == 202 and answer["accepted"] == 1


async def _received(
    fleet: LocalFleet,
    session: aiohttp.ClientSession,
    params: dict[str, str],
    frames: asyncio.Queue[dict[str, Any]] | None,
) -> str:
    """The data of the first message echoed to the session (SSE stream or polls)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if frames is not None:
            frame = await asyncio.wait_for(frames.get(), DEADLINE_S)
            batch = [frame]
        else:
            async with session.get(_http(fleet, "/poll"), params={**params, "wait": "5"}) as r:
                if r.status == 429:
                    continue
                batch = (await r.json())["frames"]
        for frame in batch:
            if frame["type"] == "message":
                return str(frame["data"])
    raise TimeoutError("no message echoed")


# -- registry liveness ---------------------------------------------------------------------

CONNECTION_TTL_S = 2.0


async def _admin(fleet: LocalFleet, method: str, path: str, body: object = None) -> Any:
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fleet.admin_url + path, json=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def test_sse_and_poll_sessions_stay_counted_listed_and_removable_past_their_ttl(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=1,
        sidecar_args=(
            *("--connection-ttl", str(CONNECTION_TTL_S), "--connection-flush", "0.2"),
            *("--heartbeat-interval", "0.5", "--max-connections-per-user", "2"),
        ),
    )
    user = "holder"
    async with unlimited_session() as session, _sse_session(fleet, session, user) as (_, stream):
        poll_id = await _poll_session(fleet, session, user)
        params = {**_auth(fleet, user), "session": poll_id}
        polled: list[dict[str, Any]] = []

        async def keep_polling() -> None:
            last_seq = 0
            while True:
                query = {**params, "wait": "1", "last_seq": str(last_seq)}
                async with session.get(_http(fleet, "/poll"), params=query) as response:
                    answer = await response.json()
                for frame in answer["frames"]:
                    last_seq = max(last_seq, frame.get("seq", 0))
                    polled.append(frame)
                    if frame["type"] == "close":
                        return

        poller = asyncio.ensure_future(keep_polling())

        async def both_refreshed_past_the_ttl() -> bool:
            records = (await _admin(fleet, "GET", f"/connections?user_id={user}"))["connections"]
            assert {r["transport"] for r in records} == {"sse", "poll"}, records  # never lost
            return all(r["last_ping"] > r["connected_at"] + CONNECTION_TTL_S for r in records)

        # their records were written again after they would have expired: still there
        await until(both_refreshed_past_the_ttl, DEADLINE_S, "SSE and poll records refreshed")
        # still counted: the user's quota (2) is full
        async with session.get(
            _http(fleet, "/poll"), params={**_auth(fleet, user), "wait": "0"}
        ) as r:
            assert r.status == 429 and (await r.json())["error"] == "user_quota"
        # and an operator can remove them
        answer = await _admin(
            fleet, "POST", "/disconnect", {"user_id": user, "code": 4001, "reason": "moderated"}
        )
        assert answer["closed"] == 2, answer
        closing = await asyncio.wait_for(_next_of_type(stream, "close"), DEADLINE_S)
        assert closing["code"] == 4001
        await asyncio.wait_for(poller, DEADLINE_S)
        assert polled[-1]["type"] == "close" and polled[-1]["code"] == 4001


async def _next_of_type(frames: asyncio.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    while (frame := await frames.get())["type"] != kind:
        pass
    return frame


# -- fuzzing the HTTP transports --------------------------------------------------------------

NOISE = st.text(max_size=12) | st.sampled_from(["0", "-1", "1e9", "nan", "inf", "9" * 5000])
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Last-Event-ID", "X-Anything", "Content-Encoding"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    max_size=3,
)
BODIES = st.binary(max_size=200) | st.lists(
    st.dictionaries(st.sampled_from(["type", "data", "cseq", "id"]), NOISE, max_size=3),
    max_size=5,
).map(lambda frames: json.dumps(frames).encode())


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["/poll", "/poll/send", "/sse/send"]),
    st.dictionaries(st.sampled_from(["wait", "last_seq", "session", "x"]), NOISE, max_size=3),
    HEADERS,
    BODIES,
    st.booleans(),
)
def test_every_answer_to_any_request_is_a_2xx_or_a_4xx_with_a_reason(
    one_gateway, path: str, query: dict[str, str], headers: dict[str, str], body: bytes, real: bool
) -> None:
    """Whatever the query, headers and body, the gateway answers (never a 5xx, never a
    dropped socket). ``real``: the request names a live poll session of the user."""
    fleet: LocalFleet = one_gateway

    async def request() -> None:
        async with aiohttp.ClientSession() as session:
            params = {**query, **_auth(fleet, "fuzzer")}
            if real:
                params["session"] = await _poll_session(fleet, session, "fuzzer")
            if path == "/poll":
                params["wait"] = "0" if real else params.get("wait", "0")[:3]
            method = "GET" if path == "/poll" else "POST"
            async with session.request(
                method, _http(fleet, path), params=params, headers=headers, data=body
            ) as response:
                text = await response.text()
            assert response.status < 500, (response.status, text)
            if response.status >= 400 and response.content_type == "application/json":
                assert json.loads(text)["error"], text  # the gateway's refusal, with its reason
            elif response.status >= 400:  # the HTTP layer's (a request line over 8 KiB)
                assert text.strip(), response.status

    asyncio.run(asyncio.wait_for(request(), DEADLINE_S))
