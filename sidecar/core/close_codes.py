"""The WebSocket close codes the gateway sends, and the retry hint a close reason carries."""

from __future__ import annotations

import re
from enum import IntEnum

MAX_REASON_BYTES = 123
"""RFC 6455 §5.5: a control frame carries at most 125 bytes, 2 of them the close code."""

_HINT_KEY = "retry_after_ms"
_HINT = re.compile(rf"\b{_HINT_KEY}=(\d+)\b")


class CloseCode(IntEnum):
    """Why the gateway ends a connection; clients choose whether and when to reconnect by it."""

    NORMAL = 1000
    """The session is over: either side closed it on purpose. No reconnect is expected."""

    GOING_AWAY = 1001
    """The gateway is shutting down now, with no drain: reconnect with backoff."""

    ABNORMAL = 1006
    """Never sent: recorded when a connection ended without a close frame (the client
    vanished, or a poll session expired)."""

    NO_STATUS = 1005
    """Never sent: recorded when the client's close frame carried no code."""

    PROTOCOL_ERROR = 1002
    """The client broke RFC 6455 (an unmasked frame, a reserved bit or opcode, a bad
    fragment or close frame): the connection is closed."""

    INVALID_PAYLOAD = 1007
    """A text message that is not UTF-8; or the client kept sending frames that are not
    protocol v1 (past its bad-frame budget)."""

    POLICY_VIOLATION = 1008
    """Auth failed, a quota is used up or the client sent too fast: reconnecting at once
    does not help."""

    MESSAGE_TOO_BIG = 1009
    """The client sent a message larger than the maximum message size."""

    INTERNAL_ERROR = 1011
    """The gateway failed unexpectedly: reconnect with backoff."""

    SERVICE_RESTART = 1012
    """Drain: this pod is leaving. The reason carries a retry hint
    (:func:`retry_hint_reason`); reconnecting after it lands on another pod."""

    TRY_AGAIN_LATER = 1013
    """Overload: the client read too slowly, the gateway is full or the session's backend
    was lost. Reconnect with backoff."""

    TOKEN_EXPIRED = 4401
    """The session's token expired and no refresh frame brought a newer one: reconnect
    with a fresh token (the session resumes)."""


def retry_hint_reason(reason: str, retry_after_ms: int) -> str:
    """A close reason that carries a retry hint: ``"drain; retry_after_ms=1500"``.

    The text of ``reason`` is cut (on a character boundary) so that the whole reason
    fits :data:`MAX_REASON_BYTES` of UTF-8; the hint itself is never cut.
    """
    if retry_after_ms < 0:
        raise ValueError(f"retry_after_ms must not be negative, got {retry_after_ms}")
    hint = f"{_HINT_KEY}={int(retry_after_ms)}"
    if len(hint) > MAX_REASON_BYTES:
        raise ValueError(f"retry_after_ms={retry_after_ms} does not fit a close reason")
    suffix = "; " + hint
    room = MAX_REASON_BYTES - len(suffix)
    text = reason.encode()[: max(0, room)].decode(errors="ignore")  # a character boundary
    return text + suffix if text else hint


BACKEND_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012, 1013, 1014})
"""What a backend may ask the gateway to send (RFC 6455 7.4.1: the codes a server sends)."""

OPERATOR_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.GOING_AWAY,
        CloseCode.POLICY_VIOLATION,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
    }
)
"""What an operator may send with ``POST /disconnect`` (and 4000-4999, the application's)."""


def backend_close(code: int, reason: str) -> tuple[int, str]:
    """A backend's close request as it may go on the wire: a code a server may send
    (1000, 1001, 1008, 1011-1014, or 3000-4999; anything else becomes 1011, keeping the
    code in the reason) and a reason cut on a character boundary to fit the frame."""
    if code not in BACKEND_CLOSE_CODES and not 3000 <= code <= 4999:
        reason, code = f"backend sent close code {code}: {reason}", CloseCode.INTERNAL_ERROR
    return int(code), fit_reason(reason)


def fit_reason(reason: str) -> str:
    """``reason`` cut on a character boundary to at most :data:`MAX_REASON_BYTES` of UTF-8."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def parse_retry_hint(reason: str) -> int | None:
    """The milliseconds hinted in a close reason (the last hint, if several), else None."""
    hints = _HINT.findall(reason)
    return int(hints[-1]) if hints else None
