"""Resumable sessions in memory (:class:`MemoryReplayStore`): the contract of
:class:`~sidecar.replay_store.ReplayStore` without a Redis, for tests of what writes and
reads sessions. Windows expire on ``clock`` (a fake clock makes them exact).

It keeps what Redis keeps, record by record (a session's counters, its buffer and its
grants, each expiring on its own), so a test against it sees what a pod against Redis
would; :meth:`MemoryReplayStore.pod` gives another pod's view of the same sessions.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sidecar.core.session import Entry
from sidecar.replay_store import SessionState


@dataclass(slots=True)
class _Counters:
    expires_at: float
    user_id: str = ""
    last_seq: int = 0
    last_cseq: int = 0
    backend_last_id: int = 0
    kept_bytes: int = 0


@dataclass(slots=True)
class _Buffer:
    expires_at: float
    kept: deque[Entry] = field(default_factory=deque)
    top: int = 0  # the highest seq ever appended: appends must go above it


@dataclass(slots=True)
class _Grants:
    expires_at: float
    channels: set[str] = field(default_factory=set)


_Record = TypeVar("_Record", _Counters, _Buffer, _Grants)


@dataclass(slots=True)
class _Sessions:
    """What the pods share (what one Redis holds)."""

    clock: Callable[[], float]
    counters: dict[str, _Counters] = field(default_factory=dict)
    buffers: dict[str, _Buffer] = field(default_factory=dict)
    grants: dict[str, _Grants] = field(default_factory=dict)

    def live(self, records: dict[str, _Record], session_id: str) -> _Record | None:
        """The session's record if it has not expired (an expired one is dropped)."""
        record = records.get(session_id)
        if record is not None and self.clock() >= record.expires_at:
            del records[session_id]
            return None
        return record


class MemoryReplayStore:
    """A pod's replay store held in dicts (one pod's bounds, shared sessions)."""

    def __init__(
        self,
        max_messages: int = 1000,
        max_age_s: float = 300.0,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = _Sessions(clock)
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes

    def pod(
        self, max_messages: int = 1000, max_age_s: float = 300.0, max_bytes: int = 1 << 20
    ) -> MemoryReplayStore:
        """Another pod's store over the same sessions and clock (what a second store on the
        same Redis is), with bounds of its own."""
        other = MemoryReplayStore(max_messages, max_age_s, max_bytes)
        other._sessions = self._sessions
        return other

    def _expiry(self) -> float:
        return self._sessions.clock() + self.max_age_s

    def _counters(self, session_id: str) -> _Counters:
        counters = self._sessions.live(self._sessions.counters, session_id)
        if counters is None:
            counters = self._sessions.counters[session_id] = _Counters(self._expiry())
        return counters

    async def close(self) -> None:
        return None

    async def load(self, session_id: str) -> SessionState | None:
        counters = self._sessions.live(self._sessions.counters, session_id)
        if counters is None:
            return None
        buffer = self._sessions.live(self._sessions.buffers, session_id)
        grants = self._sessions.live(self._sessions.grants, session_id)
        return SessionState(
            session_id=session_id,
            user_id=counters.user_id,
            last_seq=counters.last_seq,
            last_cseq=counters.last_cseq,
            backend_last_id=counters.backend_last_id,
            first_kept=buffer.kept[0].seq if buffer is not None and buffer.kept else None,
            granted=frozenset(grants.channels) if grants is not None else frozenset(),
        )

    async def entries(self, session_id: str, after: int, upto: int) -> list[Entry]:
        buffer = self._sessions.live(self._sessions.buffers, session_id)
        if buffer is None:
            return []
        return [entry for entry in buffer.kept if after < entry.seq <= upto]

    async def create(self, sessions: Sequence[tuple[str, str]]) -> None:
        for session_id, user_id in sessions:
            counters = self._counters(session_id)
            counters.user_id, counters.last_seq, counters.last_cseq = user_id, 0, 0
            counters.expires_at = self._expiry()

    async def update_grants(self, changes: Sequence[tuple[str, str, bool]]) -> None:
        for session_id, channel, granted in changes:
            grants = self._sessions.live(self._sessions.grants, session_id)
            if grants is None:
                grants = self._sessions.grants[session_id] = _Grants(self._expiry())
            if granted:
                grants.channels.add(channel)
            else:
                grants.channels.discard(channel)
            grants.expires_at = self._expiry()
            if not grants.channels:  # an empty set is no record (as in Redis)
                del self._sessions.grants[session_id]

    async def persist(self, entries: list[Entry], cseqs: dict[str, int]) -> set[str]:
        by_session: dict[str, list[Entry]] = {}
        for entry in entries:
            by_session.setdefault(entry.session_id, []).append(entry)
        refused = set()
        for session_id in by_session.keys() | cseqs.keys():
            mine = by_session.get(session_id, [])
            counters = self._counters(session_id)
            if mine and not self._append(session_id, mine, counters):
                refused.add(session_id)
            counters.last_cseq = max(counters.last_cseq, cseqs.get(session_id, 0))
            counters.expires_at = self._expiry()
            grants = self._sessions.live(self._sessions.grants, session_id)
            if grants is not None:
                grants.expires_at = self._expiry()
        return refused

    def _append(self, session_id: str, mine: list[Entry], counters: _Counters) -> bool:
        """Append entries in order while each goes above every seq persisted (the counters'
        ``last_seq``, the buffer's top), raising the counters to what was appended; trim the
        buffer to the bounds and refresh its window. False when an entry ended the batch
        (another pod wrote past it): as the Redis script does."""
        buffer = self._sessions.live(self._sessions.buffers, session_id)
        top = max(counters.last_seq, buffer.top if buffer is not None else 0)
        appended = []
        for entry in mine:
            if entry.seq <= top:
                break
            appended.append(entry)
            top = entry.seq
        if appended:
            if buffer is None:
                buffer = self._sessions.buffers[session_id] = _Buffer(self._expiry())
            buffer.kept.extend(appended)
            buffer.top = counters.last_seq = top
            message_id = max(entry.message_id for entry in appended)
            counters.backend_last_id = max(counters.backend_last_id, message_id)
            counters.kept_bytes += sum(len(entry.data) for entry in appended)
            while buffer.kept and (
                len(buffer.kept) > self.max_messages or counters.kept_bytes > self.max_bytes
            ):
                counters.kept_bytes -= len(buffer.kept.popleft().data)
            buffer.expires_at = self._expiry()
        return len(appended) == len(mine)
