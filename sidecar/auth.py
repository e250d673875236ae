"""Handshake authentication: find the token, verify it, name the user.

A token may arrive in the ``Authorization: Bearer`` header, the
``access_token`` query parameter, or (browsers cannot set headers) as a
``Sec-WebSocket-Protocol`` entry ``bearer.<token>``. A failure is an
:class:`AuthError` carrying the HTTP status and a reason that is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jwt

SUBPROTOCOL_PREFIX = "bearer."


class AuthError(Exception):
    """A refused handshake: ``status`` 401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token names."""

    user_id: str
    claims: Mapping[str, object]


def find_token(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[str, str | None]:
    """The token and, if it came as a subprotocol entry, that entry (to echo back)."""
    authorization = headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip(), None
    if query.get("access_token"):
        return query["access_token"], None
    for entry in headers.get("Sec-WebSocket-Protocol", "").split(","):
        entry = entry.strip()
        if entry.startswith(SUBPROTOCOL_PREFIX):
            return entry[len(SUBPROTOCOL_PREFIX) :], entry
    raise AuthError(
        401,
        "missing_token",
        "no token: send Authorization: Bearer, ?access_token= or a bearer.<token> subprotocol",
    )


class TokenVerifier:
    """Verifies HS256 tokens signed with the fleet's shared key."""

    def __init__(self, key: bytes, audience: str, leeway_s: float = 5.0) -> None:
        self._key = key
        self._audience = audience
        self._leeway_s = leeway_s

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "not_yet_valid", "token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(403, "wrong_audience", "token is for another audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "bad_signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid", f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid", "token has no subject") from None
        return Identity(subject, claims)
