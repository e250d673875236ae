"""Backend choice by rendezvous hashing, and handshake token checks."""

from __future__ import annotations

import time

import jwt
import pytest

from sidecar.auth import AuthError, KeySet, TokenVerifier, find_token
from sidecar.hashing import pick_backend
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


@pytest.mark.parametrize(
    ("claims", "key", "reason"),
    [
        ({"sub": "a", "aud": "wsfleet", "exp": -60}, KEY, "expired"),
        ({"sub": "a", "aud": "wsfleet", "exp": 60, "nbf": 60}, KEY, "not_yet_valid"),
        ({"sub": "a", "aud": "other", "exp": 60}, KEY, "wrong_audience"),
        ({"sub": "a", "aud": "wsfleet", "exp": 60}, b"x" * 64, "bad_signature"),
        ({"aud": "wsfleet", "exp": 60}, KEY, "invalid"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    claims: dict[str, object], key: bytes, reason: str
) -> None:
    """Times in ``claims`` are offsets from now, in seconds."""
    now = time.time()
    timed = {k: now + v if k in ("exp", "nbf") else v for k, v in claims.items()}  # type: ignore[operator]
    token = jwt.encode(timed, key, algorithm="HS256")
    with pytest.raises(AuthError) as caught:
        TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token)
    assert caught.value.reason == reason


def test_an_unsigned_token_is_refused() -> None:
    token = jwt.encode(
        {"sub": "a", "aud": "wsfleet", "exp": time.time() + 60}, None, algorithm="none"
    )
    with pytest.raises(AuthError) as caught:
        TokenVerifier(KeySet(secret=KEY), "wsfleet").verify(token)
    assert caught.value.status == 401
