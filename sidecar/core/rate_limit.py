"""Token buckets, and the inbound limits of one connection (messages/s and bytes/s)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


def refilled(tokens: float, updated: float, now: float, rate_per_s: float, burst: float) -> float:
    """A bucket's tokens at ``now``: ``tokens`` at ``updated`` plus what ``rate_per_s``
    adds since, at most ``burst``. A clock that steps back (``now`` not after ``updated``)
    adds nothing; a bucket never updated (``updated`` = -inf) is full."""
    if now > updated:
        return min(burst, tokens + (now - updated) * rate_per_s)
    return tokens


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
    _updated: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        _check_bucket(self.rate_per_s, self.burst)
        self._tokens = self.burst

    def tokens(self, now: float) -> float:
        """The tokens available at ``now``."""
        self._tokens = refilled(self._tokens, self._updated, now, self.rate_per_s, self.burst)
        self._updated = max(self._updated, now)
        return self._tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many (True); else take none (False)."""
        if amount <= self.tokens(now):
            self._tokens -= amount
            return True
        return False


def _check_bucket(rate_per_s: float, burst: float) -> None:
    if not rate_per_s > 0:
        raise ValueError(f"a token bucket needs a positive rate, got {rate_per_s}")
    if not burst > 0:
        raise ValueError(f"a token bucket needs a positive burst, got {burst}")


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

    The two buckets are kept as numbers in this one object, not as two
    :class:`TokenBucket` objects: every connection that has sent anything holds one, and
    each object more per connection is one more for every pass of the cycle collector to
    walk (three objects became one: see ``sidecar/collector.py``).
    """

    messages_per_s: float | None = None
    message_burst: float | None = None
    bytes_per_s: float | None = None
    byte_burst: float | None = None
    on_exceed: OnExceed = "close"
    # each bucket: rate (0 = none), burst, tokens, when last refilled
    _message_rate: float = field(init=False, default=0.0)
    _message_burst: float = field(init=False, default=0.0)
    _message_tokens: float = field(init=False, default=0.0)
    _message_updated: float = field(init=False, default=-math.inf)
    _byte_rate: float = field(init=False, default=0.0)
    _byte_burst: float = field(init=False, default=0.0)
    _byte_tokens: float = field(init=False, default=0.0)
    _byte_updated: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        if self.on_exceed not in ("close", "drop"):
            raise ValueError(f"on_exceed must be 'close' or 'drop', got {self.on_exceed!r}")
        self._message_rate, self._message_burst = _bucket(
            "messages_per_s", self.messages_per_s, self.message_burst
        )
        self._byte_rate, self._byte_burst = _bucket(
            "bytes_per_s", self.bytes_per_s, self.byte_burst
        )
        self._message_tokens, self._byte_tokens = self._message_burst, self._byte_burst

    @property
    def unlimited(self) -> bool:
        """Whether every message passes (no rate set)."""
        return not self._message_rate and not self._byte_rate

    def check(self, size: int, now: float, count: int = 1) -> InboundVerdict:
        """May ``count`` messages of ``size`` bytes in all, received at ``now``, pass (all
        or nothing: a POST's frames are counted together)?"""
        message_rate, byte_rate = self._message_rate, self._byte_rate
        if message_rate:
            self._message_tokens = refilled(
                self._message_tokens, self._message_updated, now, message_rate, self._message_burst
            )
            self._message_updated = max(self._message_updated, now)
        if byte_rate:
            self._byte_tokens = refilled(
                self._byte_tokens, self._byte_updated, now, byte_rate, self._byte_burst
            )
            self._byte_updated = max(self._byte_updated, now)
        if (not message_rate or self._message_tokens >= count) and (
            not byte_rate or self._byte_tokens >= size
        ):
            if message_rate:
                self._message_tokens -= count
            if byte_rate:
                self._byte_tokens -= size
            return InboundVerdict.ALLOW
        return InboundVerdict.CLOSE if self.on_exceed == "close" else InboundVerdict.DROP


def _bucket(name: str, rate: float | None, burst: float | None) -> tuple[float, float]:
    """A bucket's (rate, burst) from the settings; (0, 0) when the rate sets none."""
    if rate is None or rate == 0:
        return 0.0, 0.0
    if rate < 0 or (burst is not None and burst < 0):
        raise ValueError(f"{name} and its burst must not be negative, got {rate}, {burst}")
    _check_bucket(rate, burst or rate)
    return float(rate), float(burst or rate)
