"""Handshake auth at the gateway: every accepted and refused token, through Envoy."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.helpers import unlimited_session, wait_for
from tests.jwks import SigningKey, write_jwks
from wsfleet.settings import DEFAULT_ISSUER
from wsfleet.tokens import read_auth_key
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration


async def _handshake(
    fleet: LocalFleet,
    session: aiohttp.ClientSession,
    user: str,
    token: str | None,
    where: str = "header",
) -> tuple[int, dict[str, object] | None]:
    url = f"{fleet.client_url}?user={user}"
    headers: dict[str, str] = {}
    protocols: tuple[str, ...] = ()
    if token is not None and where == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None and where == "query":
        url += f"&access_token={token}"
    elif token is not None and where == "subprotocol":
        protocols = (f"bearer.{token}",)
    try:
        ws = await session.ws_connect(url, headers=headers, protocols=protocols)
    except aiohttp.WSServerHandshakeError as refused:
        upgrade = {  # the same upgrade, sent by hand to read the refusal's body
            **headers,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        if protocols:
            upgrade["Sec-WebSocket-Protocol"] = ", ".join(protocols)
        async with session.get(url, headers=upgrade) as plain:
            body = await plain.json(content_type=None)
        return refused.status, body
    await ws.send_str("ping")
    reply = await ws.receive(timeout=5)
    await ws.close()
    assert reply.data == "ping"
    return 101, None


def _unsigned(user: str) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": user, "aud": "wsfleet", "exp": int(time.time()) + 300}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_every_token_variant_is_accepted_or_refused_with_its_reason(
    fleet_factory, tmp_path: Path
) -> None:
    rsa_key, ec_key = SigningKey.rsa("rsa-1"), SigningKey.ec("ec-1")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, rsa_key, ec_key)
    fleet: LocalFleet = await fleet_factory(
        sidecars=1,
        sidecar_args=("--jwks", str(jwks), "--jwks-refresh", "60", "--issuer", DEFAULT_ISSUER),
    )
    secret = read_auth_key(fleet.state_dir / "auth.key")
    now = int(time.time())
    hs = fleet.token("alice")
    cases = {
        "hs256 header": ("alice", hs, "header", 101, None),
        "hs256 query": ("alice", hs, "query", 101, None),
        "hs256 subprotocol": ("alice", hs, "subprotocol", 101, None),
        "rs256": ("alice", rsa_key.token("alice"), "header", 101, None),
        "es256": ("alice", ec_key.token("alice"), "query", 101, None),
        "missing": ("alice", None, "header", 401, "missing_token"),
        "garbage": ("alice", "not-a-jwt", "header", 401, "malformed"),
        "alg none": ("alice", _unsigned("alice"), "header", 401, "bad_algorithm"),
        "hs512": (
            "alice",
            jwt.encode({"sub": "alice", "aud": "wsfleet", "exp": now + 60}, secret, "HS512"),
            "header",
            401,
            "bad_algorithm",
        ),
        "expired": ("alice", rsa_key.token("alice", ttl_s=-60), "header", 401, "expired"),
        "not yet valid": (
            "alice",
            rsa_key.token("alice", nbf=now + 120),
            "header",
            401,
            "not_yet_valid",
        ),
        "wrong audience": (
            "alice",
            rsa_key.token("alice", aud="elsewhere"),
            "header",
            403,
            "wrong_audience",
        ),
        "unknown kid": (
            "alice",
            SigningKey.rsa("rsa-9").token("alice"),
            "header",
            401,
            "unknown_kid",
        ),
        "forged signature": (
            "alice",
            SigningKey("rsa-1", "RS256", SigningKey.rsa("x").private).token("alice"),
            "header",
            401,
            "bad_signature",
        ),
        "other user": ("bob", rsa_key.token("alice"), "header", 403, "user_mismatch"),
        "foreign issuer": (
            "alice",
            rsa_key.token("alice", iss="elsewhere"),
            "header",
            403,
            "wrong_issuer",
        ),
        "expires in year 2500": (
            "alice",
            rsa_key.token("alice", exp=16_725_225_600),
            "header",
            401,
            "too_long_lived",
        ),
    }
    async with unlimited_session() as session:
        for name, (user, token, where, status, reason) in cases.items():
            got, body = await _handshake(fleet, session, user, token, where)
            assert got == status, name
            if reason is not None:
                assert body is not None and body["error"] == reason, (name, body)
                assert isinstance(body["message"], str) and body["message"], name
        sidecar = fleet.info.sidecars["sidecar-1"]
        async with session.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics") as response:
            metrics = await response.text()
    # each refused case was tried twice (the upgrade, then its plain GET twin)
    assert 'wsfleet_gateway_handshakes_total{outcome="expired"} 2.0' in metrics
    assert 'wsfleet_gateway_handshakes_total{outcome="unknown_kid"} 2.0' in metrics
    assert 'wsfleet_gateway_handshakes_total{outcome="accepted"} 6.0' in metrics  # 5 + the probe


async def test_a_rotated_jwks_key_is_picked_up_on_first_use(fleet_factory, tmp_path: Path) -> None:
    old, new = SigningKey.ec("ec-1"), SigningKey.ec("ec-2")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, old)
    fleet: LocalFleet = await fleet_factory(
        sidecars=1,
        sidecar_args=("--jwks", str(jwks), "--jwks-refresh", "3600", "--issuer", DEFAULT_ISSUER),
    )
    async with unlimited_session() as session:
        assert (await _handshake(fleet, session, "alice", old.token("alice")))[0] == 101
        write_jwks(jwks, old, new)  # rotation: the new key is published first

        async def accepted() -> bool:
            return (await _handshake(fleet, session, "alice", new.token("alice")))[0] == 101

        await wait_for(accepted, timeout_s=10, interval_s=0.5)
        write_jwks(jwks, new)  # the old key is retired
        assert (await _handshake(fleet, session, "alice", new.token("alice")))[0] == 101
