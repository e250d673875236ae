"""The local fleet's HS256 signing key and the tokens it signs.

``wsfleet up`` keeps its key in ``<state dir>/auth.key`` (created on first
use, mode 0600); ``wsfleet token`` signs with the same key, so a token printed
by one works against the fleet started by the other.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import jwt

from wsfleet.errors import ConfigError
from wsfleet.secret_files import ensure_secret, read_secret
from wsfleet.settings import DEFAULT_AUDIENCE, DEFAULT_ISSUER

KEY_FILE = "auth.key"


def key_path(state_dir: Path) -> Path:
    return state_dir / KEY_FILE


def ensure_auth_key(state_dir: Path) -> Path:
    """Create the state dir's signing key if it has none; return its path."""
    return ensure_secret(key_path(state_dir), lambda: secrets.token_hex(32))


def read_auth_key(path: Path) -> bytes:
    return read_secret(path, "auth key", 32).encode()


def mint_token(
    key: bytes,
    user_id: str,
    ttl_s: float = 3600,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_ISSUER,
    extra_claims: dict[str, object] | None = None,
) -> str:
    """An HS256 JWT for ``user_id`` valid for ``ttl_s`` seconds."""
    if not user_id:
        raise ConfigError("a token needs a non-empty user id")
    if ttl_s <= 0:
        raise ConfigError(f"token TTL must be positive, not {ttl_s}")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
    }
    claims.update(extra_claims or {})
    return jwt.encode(claims, key, algorithm="HS256")
