"""Resumable sessions: what a pod keeps of each session so that its client can resume, on
this pod or any other, and how the pod writes it in batches.

A session has counters (:class:`SessionState`), a replay buffer of its last outbound
messages (:class:`~sidecar.core.session.Entry`, numbered by ``seq``) and the channels the
server subscribed it to. Every write refreshes the session's window: what is not written
for ``max_age_s`` is forgotten (the replay window's age); the buffer keeps the newest
``max_messages`` entries and ``max_bytes`` of data (its size). Seqs only grow, so a pod
that lost a session to another pod (the client resumed elsewhere) finds its appends
refused: it is superseded. The counters only grow too, so a superseded pod's late batch
moves nothing back.

:class:`ReplayStore` is that contract; :class:`~sidecar.redis_replay_store.RedisReplayStore`
keeps it for real fleets and :class:`~sidecar.memory_replay_store.MemoryReplayStore` in
memory (tests); both pass the same contract tests. :class:`ReplayWriter` batches a pod's
writes to either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from sidecar.core.session import Entry
from sidecar.metrics import RedisTimer
from wsfleet.batch_spacing import BATCH_SPACING_S, Spacing
from wsfleet.cancelling import cancel_and_wait

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class SessionState:
    session_id: str
    user_id: str
    last_seq: int
    last_cseq: int
    backend_last_id: int
    first_kept: int | None  # oldest seq still in the replay buffer
    granted: frozenset[str] = frozenset()  # channels the server subscribed it to


class ReplayStoreUnavailable(Exception):
    """The store cannot be reached right now (delivery goes on without a replay copy)."""


class ReplayStore(Protocol):
    """What the gateway needs of the sessions' store: read a session back when its client
    resumes, write new sessions, messages, client seqs and channel grants in batches.
    Every call raises :class:`ReplayStoreUnavailable` when the store cannot be reached."""

    async def load(self, session_id: str) -> SessionState | None:
        """The session's counters, oldest kept seq and grants; None once it has expired
        (or never existed)."""

    async def entries(self, session_id: str, after: int, upto: int) -> list[Entry]:
        """The kept messages with ``after < seq <= upto``, in order."""

    async def create(self, sessions: Sequence[tuple[str, str]]) -> None:
        """Start new sessions, given as (session id, user id), their counters at 0."""

    async def update_grants(self, changes: Sequence[tuple[str, str, bool]]) -> None:
        """Record channels granted to sessions, or taken back: (session, channel, granted).
        The grants live as long as the session's other records."""

    async def persist(self, entries: list[Entry], cseqs: dict[str, int]) -> set[str]:
        """Append entries (each session's in seq order) and record client seqs; refresh
        each written session's window and trim its buffer to the bounds.

        A session's entries are appended in order while each goes above every seq
        persisted for the session (its ``last_seq``, the buffer's highest ever); the first
        that does not ends the session's batch, refused. So a pod's batch is appended whole
        or not at all, and never mixes with another pod's entries. The counters only grow:
        ``last_seq`` and ``backend_last_id`` rise to what was appended, ``last_cseq`` to a
        higher client seq; a lower number changes nothing.

        Returns the sessions whose appends were refused (the session lives on another pod
        now, which wrote past them): :class:`ReplayWriter` tells their watchers
        ``durable=False`` and the session closes on this pod (1013, "session moved"),
        never sending or acknowledging the refused entries."""

    async def close(self) -> None:
        """Let go of connections; the store is not used afterwards."""


class PersistWatcher(Protocol):
    """Who hears how a session's writes went: once per session per batch."""

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> None:
        """Entries up to ``upto_seq`` (backend ids up to ``message_id``) are durable (True),
        were refused because the session lives on another pod now (False), or Redis is
        unreachable (None: delivery goes on without a replay copy; the error is counted)."""


class ReplayWriter:
    """Batches the replay writes of all sessions of a pod: one pipeline per event-loop turn
    (while busy, per batch spacing: ``wsfleet.batch_spacing``) for the sessions that
    handshakes create, one for the messages they persist.

    Nothing is created per message: entries join the pending batch, and each session's
    watcher hears once per batch how far its writes got (a watermark). A batch's new
    sessions are written before its entries. A handshake does not wait for its session's
    record (its one round trip is the registry's): the record lands with the next batch,
    before any entry of the session; a failure is counted (``on_error``), never refused.
    """

    def __init__(
        self,
        store: ReplayStore,
        on_error: Callable[[], None],
        spacing_s: float = BATCH_SPACING_S,
    ) -> None:
        self._store = store
        self._on_error = on_error
        self._entries: list[Entry] = []
        self._cseqs: dict[str, int] = {}
        self._watchers: dict[str, tuple[PersistWatcher, int, int]] = {}  # id -> (w, seq, mid)
        self._creating: list[tuple[str, str]] = []
        self._grants: list[tuple[str, str, bool]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spacing = Spacing(spacing_s)
        self.redis_timer = RedisTimer()  # wsfleet_gateway_redis_batch_seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def create(self, session_id: str, user_id: str) -> None:
        """Start a session with the next batch (before any entry of it)."""
        self._creating.append((session_id, user_id))
        self._wake.set()

    def persist(self, watcher: PersistWatcher, entry: Entry) -> None:
        self._entries.append(entry)
        known = self._watchers.get(entry.session_id)
        message_id = max(entry.message_id, known[2]) if known else entry.message_id
        self._watchers[entry.session_id] = (watcher, entry.seq, message_id)
        self._wake.set()

    def grant(self, session_id: str, channel: str, granted: bool) -> None:
        """Remember (or forget) a channel the server subscribed the session to."""
        self._grants.append((session_id, channel, granted))
        self._wake.set()

    def record_cseq(self, session_id: str, cseq: int) -> None:
        self._cseqs[session_id] = cseq
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._spacing.pace()  # let this turn's handshakes and messages join
            creating, self._creating = self._creating, []
            if creating:
                await self._create(creating)
            grants, self._grants = self._grants, []
            if grants:
                try:
                    with self.redis_timer.time("replay_grants"):
                        await self._store.update_grants(grants)
                except ReplayStoreUnavailable as exc:
                    self._on_error()
                    log.warning("replay_store_unavailable", error=str(exc)[:200])
            entries, self._entries = self._entries, []
            cseqs, self._cseqs = self._cseqs, {}
            watchers, self._watchers = self._watchers, {}
            if not entries and not cseqs:
                continue
            try:
                with self.redis_timer.time("replay_persist"):
                    refused = await self._store.persist(entries, cseqs)
            except ReplayStoreUnavailable as exc:
                self._on_error()
                log.warning("replay_store_unavailable", error=str(exc)[:200])
                for watcher, seq, message_id in watchers.values():
                    watcher.persisted(seq, message_id, None)
                continue
            for session_id, (watcher, seq, message_id) in watchers.items():
                watcher.persisted(seq, message_id, session_id not in refused)

    async def _create(self, creating: list[tuple[str, str]]) -> None:
        try:
            with self.redis_timer.time("replay_create"):
                await self._store.create(creating)
        except ReplayStoreUnavailable as exc:
            self._on_error()
            log.warning("replay_store_unavailable", error=str(exc)[:200])
