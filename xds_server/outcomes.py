"""What happened on an ADS stream, as the protocol state machines report it.

The machines have no clock and keep no records: they call a subscriber with each
outcome, and the ADS service turns outcomes into the ledger's entries (with its clock)
and into metrics. (go-control-plane reports the same through its callbacks.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What the node asks for, of one type (None: everything, a wildcard)."""

    type_url: str
    names: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Sent:
    type_url: str
    version: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Acked:
    type_url: str
    version: str


@dataclass(frozen=True, slots=True)
class Nacked:
    type_url: str
    version: str
    message: str


Outcome = Subscribed | Sent | Acked | Nacked
Subscriber = Callable[[Outcome], None]
