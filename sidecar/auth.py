"""Handshake authentication: find the token, verify it, name the user.

A token may arrive in the ``Authorization: Bearer`` header, the
``access_token`` query parameter, or (browsers cannot set headers) as a
``Sec-WebSocket-Protocol`` entry ``bearer.<token>``. Tokens are JWTs signed
with HS256 (the fleet's shared key) or RS256/ES256 (keys from a JWKS, chosen by
``kid``). Anything else is refused: ``alg: none``, other algorithms, expired,
not yet valid, another audience or issuer, an unknown ``kid``, a key of the
wrong type. A refusal is an :class:`AuthError` with the HTTP status and a reason
that is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt

SUBPROTOCOL_PREFIX = "bearer."
ALGORITHMS = ("HS256", "RS256", "ES256")
_KEY_TYPES = {"HS256": "oct", "RS256": "RSA", "ES256": "EC"}


class AuthError(Exception):
    """A refused handshake: ``status`` 401 (who are you?) or 403 (not here)."""

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


@dataclass
class KeySet:
    """The keys tokens may be signed with: a shared HS256 secret and/or JWKS keys by kid."""

    secret: bytes | None = None
    by_kid: dict[str, jwt.PyJWK] = field(default_factory=dict)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, object], secret: bytes | None = None) -> KeySet:
        """Keys of a JWKS document; raises ``ValueError`` when it is not one."""
        try:
            parsed = jwt.PyJWKSet.from_dict(dict(jwks))
        except jwt.PyJWKSetError as exc:
            raise ValueError(f"not a usable JWKS: {exc}") from None
        keys = {key.key_id: key for key in parsed.keys if key.key_id}
        return cls(secret=secret, by_kid=keys)


class TokenVerifier:
    """Verifies tokens against a :class:`KeySet` (replaceable when keys rotate)."""

    def __init__(
        self,
        keys: KeySet,
        audience: str,
        issuer: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        self.keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self.unknown_kids = 0  # a hint for the key refresher

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "malformed", f"malformed token: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise AuthError(401, "bad_algorithm", f"algorithm {algorithm!r} is not accepted")
        key = self._key_for(algorithm, header.get("kid"))
        options = {"require": ["sub", "exp"]}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "not_yet_valid", "token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(403, "wrong_audience", "token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(403, "wrong_issuer", "token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "bad_signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid", f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid", "token has no subject")
        return Identity(subject, claims)

    def _key_for(self, algorithm: str, kid: object) -> jwt.PyJWK | bytes:
        if kid is not None:
            key = self.keys.by_kid.get(str(kid))
            if key is None:
                self.unknown_kids += 1
                raise AuthError(401, "unknown_kid", f"no key with kid {kid!r}")
            if key.key_type != _KEY_TYPES[algorithm]:
                raise AuthError(401, "bad_algorithm", f"key {kid!r} is not a {algorithm} key")
            return key
        if algorithm == "HS256" and self.keys.secret is not None:
            return self.keys.secret
        raise AuthError(401, "unknown_kid", f"a {algorithm} token must name its key (kid)")
