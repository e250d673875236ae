"""Smaller security fixes against real servers: the JWKS is read from loopback http within
its bounds (a huge, endless or redirected answer is refused), scraping the control plane's
open ``/metrics`` does not read the registry per scrape, and only the demo backend's
broadcasters reach every session."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from sidecar.jwks import MAX_JWKS_BYTES, load_keys, read_jwks
from tests.helpers import open_ws, unlimited_session
from tests.jwks import SigningKey
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _jwks_server(handler: Handler) -> AsyncIterator[str]:
    """A JWKS URL on loopback http, answered by ``handler``."""
    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    finally:
        await runner.cleanup()


async def test_keys_are_read_from_a_loopback_http_url() -> None:
    key = SigningKey.ec("k1")

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [key.jwk()]})

    async with _jwks_server(jwks) as url:
        assert set((await load_keys(url, None)).by_kid) == {"k1"}


async def test_an_endless_jwks_answer_is_refused_at_the_bound_not_at_the_timeout() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:  # JSON may start with any amount of white space
                await response.write(b" " * 65536)
        return response

    async with _jwks_server(endless) as url:
        with pytest.raises(ValueError, match=f"larger than {MAX_JWKS_BYTES} bytes"):
            await read_jwks(url)


async def test_a_jwks_answer_past_the_bound_is_refused_even_when_valid() -> None:
    padded = b'{"keys": [], "padding": "' + b"x" * MAX_JWKS_BYTES + b'"}'

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=padded, content_type="application/json")

    async with _jwks_server(big) as url:
        with pytest.raises(ValueError, match="larger than"):
            await read_jwks(url)


async def test_a_jwks_redirect_is_not_followed() -> None:
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://keys.example.invalid/jwks.json")

    async with _jwks_server(moved) as url:
        with pytest.raises(ValueError, match="redirects"):
            await read_jwks(url)


SCRAPES = 40


async def _calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


async def test_scraping_metrics_does_not_read_every_pod_per_scrape(one_gateway) -> None:
    fleet: LocalFleet = one_gateway
    client = aioredis.Redis.from_url(fleet.info.redis_url)
    try:
        before = await _calls(client, "hgetall")
        async with unlimited_session() as session:
            for _ in range(SCRAPES):
                async with session.get(f"{fleet.admin_url}/metrics") as response:
                    assert response.status == 200
                    assert "wsfleet_fleet_pods" in await response.text()
        reads = await _calls(client, "hgetall") - before
    finally:
        await client.aclose()
    # per scrape, every pod's record was read: SCRAPES reads with its one pod. Now the
    # scrapes share a read every few seconds; other readers (membership) add a few.
    assert reads < SCRAPES // 2, f"{reads} pod record reads for {SCRAPES} scrapes"


async def test_only_a_broadcaster_of_the_demo_backend_reaches_every_session(
    fleet_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSFLEET_BROADCASTERS", "admin")  # the backend inherits it
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    async with unlimited_session() as session:
        admin, _ = await open_ws(fleet, session, "admin")
        user, _ = await open_ws(fleet, session, "mallory")
        await user.send_str("/broadcast from mallory")
        refusal = await user.receive(timeout=10)
        assert refusal.data.startswith("refused:") and "--broadcaster" in refusal.data
        await admin.send_str("/broadcast from admin")
        # the admin's broadcast is the first either gets: mallory's reached nobody
        assert (await admin.receive(timeout=10)).data == "from admin"
        assert (await user.receive(timeout=10)).data == "from admin"
        await admin.close()
        await user.close()
