"""What a faulty network does to a byte stream, as plain logic (no sockets).

A TCP connection never loses bytes: a lost segment comes late, after a retransmission
timeout (200 ms at first, doubling while losses repeat), and everything behind it waits
(head-of-line blocking). :class:`FaultPlan` turns each chunk's arrival time into its
delivery time under ``loss`` (probability a chunk needs a retransmission), ``latency``
and ``jitter``, keeping the stream in order. A blackholed path delivers nothing at all
while the sockets stay open: a dead peer that never says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MIN_RTO_S = 0.2
MAX_RTO_S = 60.0


@dataclass(frozen=True, slots=True)
class Faults:
    loss: float = 0.0  # probability that a chunk needs (at least) one retransmission
    latency_s: float = 0.0  # one way
    jitter_s: float = 0.0  # added uniformly in [0, jitter]
    blackhole: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.loss < 1:
            raise ValueError("loss must be in [0, 1)")
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency and jitter must not be negative")


@dataclass
class FaultPlan:
    """Delivery times for one direction of one connection."""

    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)
    _last_delivery: float = 0.0

    def deliver_at(self, arrived: float) -> float | None:
        """When a chunk that arrived at ``arrived`` reaches the other side (None: never)."""
        faults = self.faults
        if faults.blackhole:
            return None
        delay = faults.latency_s + self.rng.uniform(0.0, faults.jitter_s)
        rto = MIN_RTO_S
        while self.rng.random() < faults.loss:  # each retransmission may be lost again
            delay += rto
            rto = min(MAX_RTO_S, rto * 2)
        at = max(arrived + delay, self._last_delivery)  # TCP keeps the order
        self._last_delivery = at
        return at
