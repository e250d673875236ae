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

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

SUBPROTOCOL_PREFIX = "bearer."
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_HEADERS: dict[str, Any] = {}  # the few distinct token headers seen, decoded once
_SIGNATURE_ONLY: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
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

    @property
    def expires_at(self) -> float:
        """When the token expires (Unix seconds; verified tokens always say)."""
        exp = self.claims["exp"]
        assert isinstance(exp, int | float)
        return float(exp)


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
        max_lifetime_s: float | None = None,
    ) -> None:
        self.keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._max_lifetime_s = max_lifetime_s
        self.unknown_kids = 0  # a hint for the key refresher
        self._keyed: tuple[bytes, hmac.HMAC] | None = None  # (secret, HMAC keyed with it)

    def verify(self, token: str) -> Identity:
        """The identity a valid token names; raises :class:`AuthError` for any other."""
        if self.keys.secret is not None:
            fast = self._verify_hs256(token, self.keys.secret)
            if fast is not None:
                return fast
        return self._verify_any(token)

    def _verify_hs256(self, token: str, secret: bytes) -> Identity | None:
        """The fleet's own tokens (HS256 with the shared key, no ``kid``) checked directly,
        in a fifth of PyJWT's time (this runs on every handshake); the claims go through
        the same :meth:`_check_claims`. None: not such a token, the general path decides."""
        if _COMPACT_JWS.fullmatch(token) is None:
            return None
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = _HEADERS.get(header_b64)
        if header is None:
            try:
                header = json.loads(_b64url(header_b64))
            except (ValueError, RecursionError):
                return None
            if not isinstance(header, dict):
                return None
            if len(_HEADERS) < 64:
                _HEADERS[header_b64] = header
        if header.get("alg") != "HS256" or "kid" in header or header.get("crit"):
            return None
        signed = self._hs256(secret, f"{header_b64}.{payload_b64}".encode())
        try:
            signature = _b64url(signature_b64)
        except ValueError:
            return None
        if not hmac.compare_digest(signed, signature):
            raise AuthError(401, "bad_signature", "token signature does not verify")
        try:
            claims = json.loads(_b64url(payload_b64))
        except (ValueError, RecursionError):
            return None
        if not isinstance(claims, dict):
            return None
        return Identity(self._check_claims(claims, time.time()), claims)

    def _hs256(self, secret: bytes, message: bytes) -> bytes:
        """HMAC-SHA256 from a copy of an object keyed once (keying costs more than hashing
        a token: OpenSSL 3 looks the algorithm up each time)."""
        keyed = self._keyed
        if keyed is None or keyed[0] is not secret:
            keyed = self._keyed = (secret, hmac.new(secret, digestmod="sha256"))
        mac = keyed[1].copy()
        mac.update(message)
        return mac.digest()

    def _check_claims(self, claims: dict[str, Any], now: float) -> str:
        """The subject of signature-checked ``claims`` if they hold now, else AuthError:
        ``sub`` and ``exp`` required, NumericDates are numbers, ``exp`` past (with leeway)
        is expired, ``iat`` or ``nbf`` ahead is not yet valid, ``aud`` must name this
        audience, ``iss`` must be the issuer when one is configured, ``exp`` no further
        ahead than the maximum lifetime."""
        leeway = self._leeway_s
        for name in ("sub", "exp"):
            if name not in claims:
                raise AuthError(
                    401, "invalid", f'invalid token: Token is missing the "{name}" claim'
                )
        exp = _numeric_date(claims, "exp")
        if exp <= now - leeway:
            raise AuthError(401, "expired", "token expired")
        if self._max_lifetime_s is not None and exp > now + self._max_lifetime_s + leeway:
            raise AuthError(
                401,
                "too_long_lived",
                f"token expires more than {self._max_lifetime_s:g} s from now",
            )
        if "iat" in claims and _numeric_date(claims, "iat") > now + leeway:
            raise AuthError(401, "not_yet_valid", "token not yet valid")
        if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
            raise AuthError(401, "not_yet_valid", "token not yet valid")
        if "aud" not in claims:
            raise AuthError(401, "invalid", "invalid token: no 'aud' claim")
        audience = claims["aud"]
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthError(403, "wrong_audience", "token is for another audience")
        if self._audience not in audiences:
            raise AuthError(403, "wrong_audience", "token is for another audience")
        if self._issuer is not None:
            if "iss" not in claims:
                raise AuthError(401, "invalid", "invalid token: no 'iss' claim")
            if claims["iss"] != self._issuer:
                raise AuthError(403, "wrong_issuer", "token is from another issuer")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid", "token has no subject")
        return subject

    def _verify_any(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "malformed", f"malformed token: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise AuthError(401, "bad_algorithm", f"algorithm {algorithm!r} is not accepted")
        key = self._key_for(algorithm, header.get("kid"))
        try:  # PyJWT checks the signature; the claims follow wsfleet's one set of rules
            claims = jwt.decode(token, key, algorithms=[algorithm], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError:
            raise AuthError(401, "bad_signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid", f"invalid token: {exc}") from None
        return Identity(self._check_claims(claims, time.time()), claims)

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


def _b64url(segment: str) -> bytes:
    """Strict base64url (no padding in JWS); raises ValueError on anything else."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(401, "invalid", f"invalid token: the {name!r} claim must be a number")
    return float(value)
