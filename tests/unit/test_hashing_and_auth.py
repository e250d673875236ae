"""Backend choice by rendezvous hashing, and handshake token checks."""

from __future__ import annotations

import time

import jwt
import pytest

from sidecar.auth import AuthError, KeySet, TokenVerifier, find_token
from sidecar.hashing import pick_backend
from tests.jwks import SigningKey
from wsfleet.tokens import mint_token

KEY = b"k" * 64


def test_a_key_always_picks_the_same_backend() -> None:
    backends = ["a:1", "b:1", "c:1"]
    assert {pick_backend("user-7", backends) for _ in range(10)} == {
        pick_backend("user-7", backends)
    }
    assert pick_backend("x", []) is None


def test_removing_one_of_n_backends_moves_only_its_keys() -> None:
    backends = [f"10.0.0.{n}:9000" for n in range(5)]
    keys = [f"user-{n}" for n in range(5000)]
    before = {key: pick_backend(key, backends) for key in keys}
    survivors = backends[:-1]
    after = {key: pick_backend(key, survivors) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert all(before[key] == backends[-1] for key in moved)
    assert 0.15 < len(moved) / len(keys) < 0.25  # ~1/N


def test_tokens_are_found_in_header_query_or_subprotocol() -> None:
    assert find_token({"Authorization": "Bearer abc"}, {}) == ("abc", None)
    assert find_token({}, {"access_token": "abc"}) == ("abc", None)
    headers = {"Sec-WebSocket-Protocol": "chat.v1, bearer.abc.def"}
    assert find_token(headers, {}) == ("abc.def", "bearer.abc.def")
    with pytest.raises(AuthError) as caught:
        find_token({}, {})
    assert (caught.value.status, caught.value.reason) == (401, "missing_token")


def test_a_valid_token_names_its_user() -> None:
    identity = TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(mint_token(KEY, "alice"))
    assert identity.user_id == "alice"


RSA = SigningKey.rsa("rsa-1")
BAD_CLAIMS = [  # times are offsets from now, in seconds
    ({"sub": "a", "aud": "wsfleet", "exp": -60}, "expired"),
    ({"sub": "a", "aud": "wsfleet", "exp": 60, "nbf": 60}, "not_yet_valid"),
    ({"sub": "a", "aud": "wsfleet", "exp": 60, "iat": 60}, "not_yet_valid"),
    ({"sub": "a", "aud": "other", "exp": 60}, "wrong_audience"),
    ({"sub": "a", "aud": ["x", "y"], "exp": 60}, "wrong_audience"),
    ({"sub": "a", "aud": 5, "exp": 60}, "wrong_audience"),
    ({"sub": "a", "exp": 60}, "invalid"),
    ({"aud": "wsfleet", "exp": 60}, "invalid"),
    ({"sub": "a", "aud": "wsfleet"}, "invalid"),
    ({"sub": 7, "aud": "wsfleet", "exp": 60}, "invalid"),
    ({"sub": "", "aud": "wsfleet", "exp": 60}, "invalid"),
    ({"sub": "a", "aud": "wsfleet", "exp": "never"}, "invalid"),
    ({"sub": "a", "aud": "wsfleet", "exp": True}, "invalid"),
    ({"sub": "a", "aud": "wsfleet", "exp": 60, "iss": "elsewhere"}, "wrong_issuer"),
]


def _timed(claims: dict[str, object]) -> dict[str, object]:
    now = time.time()
    return {
        k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) and v is not True else v
        for k, v in claims.items()
    }


@pytest.mark.parametrize(("claims", "reason"), BAD_CLAIMS)
def test_bad_claims_are_refused_with_the_same_reason_on_every_path(
    claims: dict[str, object], reason: str
) -> None:
    """The fleet's HS256 tokens (checked directly) and JWKS tokens (PyJWT checks the
    signature) follow one set of claim rules."""
    timed = _timed(claims)
    verifier = TokenVerifier(
        KeySet(secret=KEY, by_kid={"rsa-1": jwt.PyJWK(RSA.jwk())}), "wsfleet", "wsfleet-local"
    )
    if "iss" not in timed and reason != "wrong_issuer":
        timed["iss"] = "wsfleet-local"
    for token in (
        jwt.encode(timed, KEY, algorithm="HS256"),
        jwt.encode(timed, RSA.private, algorithm="RS256", headers={"kid": "rsa-1"}),
    ):
        with pytest.raises(AuthError) as caught:
            verifier.verify(token)
        assert caught.value.reason == reason, (token, caught.value.message)


def test_an_issuer_is_required_when_one_is_configured() -> None:
    token = jwt.encode(_timed({"sub": "a", "aud": "wsfleet", "exp": 60}), KEY, algorithm="HS256")
    with pytest.raises(AuthError) as caught:
        TokenVerifier(KeySet(secret=KEY), "wsfleet", "wsfleet-local").verify(token)
    assert caught.value.reason == "invalid"


def test_a_wrong_key_or_a_changed_payload_fails_the_signature() -> None:
    good = mint_token(KEY, "alice")
    header, payload, signature = good.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b"alice", b"mallo")
    ).decode()
    for token in (mint_token(b"x" * 64, "alice"), f"{header}.{forged_payload}.{signature}"):
        with pytest.raises(AuthError) as caught:
            TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token)
        assert caught.value.reason == "bad_signature"


def test_the_fleets_own_tokens_are_verified_without_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    token = mint_token(KEY, "alice")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PyJWT was used")

    monkeypatch.setattr(jwt, "decode", refuse)
    assert TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token).user_id == "alice"


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.", "W10.e30.sig", "eyJhbGciOiJIUzI1NiJ9.x.y"],
)
def test_malformed_tokens_are_refused_not_crashed_on(token: str) -> None:
    with pytest.raises(AuthError) as caught:
        TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token)
    assert caught.value.status == 401


def test_an_unsigned_token_is_refused() -> None:
    token = jwt.encode(
        {"sub": "a", "aud": "wsfleet", "exp": time.time() + 60}, None, algorithm="none"
    )
    with pytest.raises(AuthError) as caught:
        TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token)
    assert caught.value.status == 401


def test_a_token_that_lives_longer_than_the_maximum_is_refused_on_every_path() -> None:
    verifier = TokenVerifier(
        KeySet(secret=KEY, by_kid={"rsa-1": jwt.PyJWK(RSA.jwk())}),
        "wsfleet",
        max_lifetime_s=3600,
    )
    for ttl, accepted in ((3000, True), (30 * 86400, False)):
        claims = _timed({"sub": "a", "aud": "wsfleet", "exp": ttl})
        for token in (
            jwt.encode(claims, KEY, algorithm="HS256"),
            jwt.encode(claims, RSA.private, algorithm="RS256", headers={"kid": "rsa-1"}),
        ):
            if accepted:
                assert verifier.verify(token).expires_at == claims["exp"]
            else:
                with pytest.raises(AuthError) as caught:
                    verifier.verify(token)
                assert caught.value.reason == "too_long_lived"
