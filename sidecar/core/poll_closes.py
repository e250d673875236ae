"""Close frames of long-poll sessions that ended while no poll was waiting.

A poll session's close travels in a poll's answer. When the gateway closes it between
polls (a rate limit, a slow consumer, a drain, an operator's disconnect), the session
leaves the connection table at once, and the client's next poll would otherwise find no
session and quietly start a new one: the close, and its code, would be lost. So the close
is kept here for the client's next poll, bounded in count and in time (a client that
does not poll within the poll timeout is gone anyway).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class PollClose:
    user_id: str
    code: int
    reason: str
    at: float


class PollCloses:
    """Session id → its close, oldest first; at most ``max_entries``, each ``keep_s``."""

    __slots__ = ("_closes", "keep_s", "max_entries")

    def __init__(self, keep_s: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if keep_s <= 0 or max_entries < 1:
            raise ValueError(f"poll closes need room and time, got {max_entries}, {keep_s} s")
        self.keep_s = keep_s
        self.max_entries = max_entries
        self._closes: collections.OrderedDict[str, PollClose] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._closes)

    def add(self, session_id: str, user_id: str, code: int, reason: str, now: float) -> None:
        self._forget_old(now)
        self._closes[session_id] = PollClose(user_id, code, reason, now)
        self._closes.move_to_end(session_id)
        while len(self._closes) > self.max_entries:
            self._closes.popitem(last=False)

    def holds(self, session_id: str, now: float) -> bool:
        """Whether the close of ``session_id`` is kept (for whichever user)."""
        self._forget_old(now)
        return session_id in self._closes

    def take(self, session_id: str, user_id: str, now: float) -> tuple[int, str] | None:
        """The close of ``session_id`` if ``user_id``'s and still kept (then forgotten)."""
        self._forget_old(now)
        close = self._closes.get(session_id)
        if close is None or close.user_id != user_id:
            return None
        del self._closes[session_id]
        return close.code, close.reason

    def _forget_old(self, now: float) -> None:
        while self._closes:
            oldest = next(iter(self._closes.values()))
            if now - oldest.at < self.keep_s:
                return
            self._closes.popitem(last=False)


__all__ = ["PollClose", "PollCloses"]
