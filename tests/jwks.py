"""Signing keys and JWKS documents for tests (RSA for RS256, P-256 for ES256)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from wsfleet.settings import DEFAULT_ISSUER


@dataclass
class SigningKey:
    kid: str
    algorithm: str  # RS256 | ES256
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.algorithm})
        return jwk

    def token(self, user: str, ttl_s: float = 300, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "sub": user,
            "aud": "wsfleet",
            "iss": DEFAULT_ISSUER,
            "iat": now,
            "exp": now + ttl_s,
            **claims,
        }
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def write_jwks(path: Path, *keys: SigningKey) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"keys": [key.jwk() for key in keys]}))
    temporary.replace(path)
