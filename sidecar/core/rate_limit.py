"""Token buckets, and the inbound limits of one connection (messages/s and bytes/s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` kept; starts full.

    Refilled lazily from the time elapsed since the last call, so an idle bucket costs
    nothing. Over any window of ``t`` seconds it grants at most ``burst + rate_per_s * t``.
    A clock that steps back refills nothing.
    """

    rate_per_s: float
    burst: float
    _tokens: float = field(init=False)
    _updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"a token bucket needs a positive rate, got {self.rate_per_s}")
        if not self.burst > 0:
            raise ValueError(f"a token bucket needs a positive burst, got {self.burst}")
        self._tokens = self.burst

    def tokens(self, now: float) -> float:
        """The tokens available at ``now``."""
        last = self._updated
        if last is None or now > last:
            if last is not None:
                self._tokens = min(self.burst, self._tokens + (now - last) * self.rate_per_s)
            self._updated = now
        return self._tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many (True); else take none (False)."""
        if amount <= self.tokens(now):
            self._tokens -= amount
            return True
        return False


class InboundVerdict(Enum):
    """What to do with a message the client sent."""

    ALLOW = "allow"
    """Pass it on to the backend."""

    DROP = "drop"
    """Drop it; the client gets a notice that it was rate limited."""

    CLOSE = "close"
    """Close the connection with 1008 (policy violation)."""


OnExceed = Literal["close", "drop"]


@dataclass(slots=True)
class InboundLimits:
    """The rate limits on what one client sends: messages a second and bytes a second.

    A rate of 0 or None is unlimited. A burst of 0 or None is one second's worth of the
    rate. A message larger than ``byte_burst`` can never pass, so ``byte_burst`` should
    be at least the maximum message size. A message passes only if both buckets have
    room; one that does not pass takes nothing from either.
    """

    messages_per_s: float | None = None
    message_burst: float | None = None
    bytes_per_s: float | None = None
    byte_burst: float | None = None
    on_exceed: OnExceed = "close"
    _messages: TokenBucket | None = field(init=False, default=None)
    _bytes: TokenBucket | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.on_exceed not in ("close", "drop"):
            raise ValueError(f"on_exceed must be 'close' or 'drop', got {self.on_exceed!r}")
        self._messages = _bucket("messages_per_s", self.messages_per_s, self.message_burst)
        self._bytes = _bucket("bytes_per_s", self.bytes_per_s, self.byte_burst)

    @property
    def unlimited(self) -> bool:
        """Whether every message passes (no rate set)."""
        return self._messages is None and self._bytes is None

    def check(self, size: int, now: float, count: int = 1) -> InboundVerdict:
        """May ``count`` messages of ``size`` bytes in all, received at ``now``, pass (all
        or nothing: a POST's frames are counted together)?"""
        messages, payload = self._messages, self._bytes
        if (messages is None or messages.tokens(now) >= count) and (
            payload is None or payload.tokens(now) >= size
        ):
            if messages is not None:
                messages.take(count, now)
            if payload is not None:
                payload.take(size, now)
            return InboundVerdict.ALLOW
        return InboundVerdict.CLOSE if self.on_exceed == "close" else InboundVerdict.DROP


def _bucket(name: str, rate: float | None, burst: float | None) -> TokenBucket | None:
    if rate is None or rate == 0:
        return None
    if rate < 0 or (burst is not None and burst < 0):
        raise ValueError(f"{name} and its burst must not be negative, got {rate}, {burst}")
    return TokenBucket(rate, burst or rate)
