"""WebSocket close codes wsfleet sends, and the retry hint carried in a reason."""

from __future__ import annotations

import re
from enum import IntEnum

MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class CloseCode(IntEnum):
    """Why a connection ends. Clients decide whether and when to reconnect from this."""

    NORMAL = 1000
    """The session is over (either side closed on purpose)."""
    GOING_AWAY = 1001
    """The gateway is shutting down; reconnect."""
    POLICY_VIOLATION = 1008
    """Auth, quota or rate limit: reconnecting at once will not help."""
    MESSAGE_TOO_BIG = 1009
    """A message exceeded the maximum size."""
    INTERNAL_ERROR = 1011
    """The gateway failed; reconnect with backoff."""
    SERVICE_RESTART = 1012
    """Drain: this pod is going away; reconnect after the hinted delay (lands elsewhere)."""
    TRY_AGAIN_LATER = 1013
    """Overload: slow consumer, backend lost; reconnect with backoff."""


_HINT = re.compile(r"retry_after_ms=(\d+)")


def retry_hint_reason(reason: str, retry_after_ms: int) -> str:
    """``"<reason>; retry_after_ms=<n>"``, shortened so that it fits a close frame."""
    hint = f"; retry_after_ms={max(0, int(retry_after_ms))}"
    budget = MAX_REASON_BYTES - len(hint.encode())
    text = reason.encode()[:budget].decode(errors="ignore")
    return text + hint


def parse_retry_hint(reason: str) -> int | None:
    """The milliseconds hinted in a close reason, if any."""
    match = _HINT.search(reason)
    return int(match.group(1)) if match else None
