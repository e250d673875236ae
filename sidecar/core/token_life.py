"""How long a session lives: its token's expiry, and what a refresh frame does to it.

A session lives no longer than its token (``exp``, Unix seconds, checked against the wall
clock the shell passes in). A protocol v1 client sends ``{"type": "refresh", "token": T}``
to go on; the shell verifies T (signature, claims: I/O-free but keyed by the JWKS it
holds) and hands the outcome here, which decides:

- the verifier refused T (``expired``, ``bad_signature``, ...): refused with its reason;
- T names another user: refused, ``user_mismatch`` (a session never changes hands);
- T expires later than the session's token: accepted, the session lives until then;
- T expires no later (an older or the same token): accepted, the expiry is kept (a
  refresh never shortens a session).

Every outcome is answered with a notice (``token_refreshed``, ``refresh_refused: <why>``);
a refused refresh leaves the session as it was. Once the expiry has passed the session is
closed with :data:`TOKEN_EXPIRED` (4401): at its next client frame, or by the keep-alive
sweep for a silent one (``SessionCore.token_expired``, on the hot path: one comparison).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sidecar.core.close_codes import CloseCode

TOKEN_EXPIRED = (CloseCode.TOKEN_EXPIRED, "token expired")
USER_MISMATCH = "user_mismatch"


class TokenIdentity(Protocol):
    """What a verified token says (``sidecar.auth.Identity``)."""

    @property
    def user_id(self) -> str: ...

    @property
    def expires_at(self) -> float: ...  # Unix seconds


@dataclass(frozen=True, slots=True)
class TokenRefused:
    """The verifier's refusal of a token, by its reason (``expired``, ``bad_signature``...)."""

    reason: str


class RefreshOutcome(Enum):
    EXTENDED = "extended"  # accepted: the session lives until the new token's expiry
    KEPT = "kept"  # accepted, but the new token expires no later: the expiry stays
    REFUSED = "refused"  # the session keeps its token and expiry


@dataclass(frozen=True, slots=True)
class RefreshVerdict:
    """A refresh's outcome: the session's expiry from now on, and the notice it gets."""

    outcome: RefreshOutcome
    expires_at: float
    reason: str = ""  # why it was refused

    @property
    def accepted(self) -> bool:
        return self.outcome is not RefreshOutcome.REFUSED

    @property
    def notice(self) -> str:
        return "token_refreshed" if self.accepted else f"refresh_refused: {self.reason}"


def judge_refresh(
    session_user: str, expires_at: float, token: TokenIdentity | TokenRefused
) -> RefreshVerdict:
    """A refresh of a session of ``session_user`` whose token expires at ``expires_at``,
    with ``token`` as the verifier saw it."""
    if isinstance(token, TokenRefused):
        return RefreshVerdict(RefreshOutcome.REFUSED, expires_at, token.reason)
    if token.user_id != session_user:
        return RefreshVerdict(RefreshOutcome.REFUSED, expires_at, USER_MISMATCH)
    if token.expires_at > expires_at:
        return RefreshVerdict(RefreshOutcome.EXTENDED, token.expires_at)
    return RefreshVerdict(RefreshOutcome.KEPT, expires_at)


__all__ = [
    "TOKEN_EXPIRED",
    "USER_MISMATCH",
    "RefreshOutcome",
    "RefreshVerdict",
    "TokenIdentity",
    "TokenRefused",
    "judge_refresh",
]
