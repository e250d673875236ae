"""Token buckets, and the inbound limits of one connection (messages/s and bytes/s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved; starts full."""

    rate_per_s: float
    burst: float
    _tokens: float = field(init=False)
    _updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._tokens = self.burst

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many; False (taking none) otherwise."""
        if self._updated is not None:
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        self._updated = now
        if amount <= self._tokens:
            self._tokens -= amount
            return True
        return False


class InboundVerdict(Enum):
    ALLOW = "allow"
    DROP = "drop"  # the message is dropped; the client is told
    CLOSE = "close"  # close with 1008 (policy violation)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Limits on what one client may send; 0 means unlimited."""

    messages_per_s: float = 0.0
    message_burst: float = 0.0
    bytes_per_s: float = 0.0
    byte_burst: float = 0.0
    close_on_exceed: bool = True  # False: drop the message and send a notice


class InboundLimits:
    """Applies a :class:`LimitSpec` to one connection's incoming messages."""

    __slots__ = ("_bytes", "_messages", "_spec")

    def __init__(self, spec: LimitSpec) -> None:
        self._spec = spec
        self._messages = (
            TokenBucket(spec.messages_per_s, spec.message_burst or spec.messages_per_s)
            if spec.messages_per_s > 0
            else None
        )
        self._bytes = (
            TokenBucket(spec.bytes_per_s, spec.byte_burst or spec.bytes_per_s)
            if spec.bytes_per_s > 0
            else None
        )

    def check(self, size: int, now: float) -> InboundVerdict:
        """May a message of ``size`` bytes pass now?"""
        allowed = True
        if self._messages is not None and not self._messages.take(1, now):
            allowed = False
        if allowed and self._bytes is not None and not self._bytes.take(size, now):
            allowed = False
        if allowed:
            return InboundVerdict.ALLOW
        return InboundVerdict.CLOSE if self._spec.close_on_exceed else InboundVerdict.DROP
