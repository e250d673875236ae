"""Resumable sessions in Redis: each session's counters and its replay buffer.

- ``{ns}:sess:{session_id}`` hash: ``user_id``, ``last_seq`` (last persisted outbound seq),
  ``last_cseq`` (last client seq delivered to the backend), ``backend_last_id`` (highest
  backend message_id persisted);
- ``{ns}:replay:{session_id}`` stream: one entry per outbound message, id ``<seq>-1``,
  fields ``d`` (data), ``b`` (binary flag), ``m`` (backend message_id); capped at
  ``max_messages`` entries.

Both expire ``max_age_s`` after the session's last write: that is the replay window's
age; ``max_messages`` is its size. Stream ids only grow, so a pod that lost a session to
another pod (the client resumed elsewhere) finds its writes refused: it is superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class SessionState:
    session_id: str
    user_id: str
    last_seq: int
    last_cseq: int
    backend_last_id: int
    first_kept: int | None  # oldest seq still in the replay buffer


@dataclass(frozen=True, slots=True)
class Entry:
    session_id: str
    seq: int
    data: bytes
    binary: bool
    message_id: int = 0


class ReplayStoreUnavailable(Exception):
    pass


class ReplayStore:
    def __init__(
        self,
        url: str,
        namespace: str = "wsfleet",
        max_messages: int = 1000,
        max_age_s: float = 300.0,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=16, timeout=5.0, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._ns = namespace
        self.max_messages = max_messages
        self.max_age_ms = max(1, int(max_age_s * 1000))

    def _session_key(self, session_id: str) -> str:
        return f"{self._ns}:sess:{session_id}"

    def _stream_key(self, session_id: str) -> str:
        return f"{self._ns}:replay:{session_id}"

    async def close(self) -> None:
        await self._redis.aclose()

    async def load(self, session_id: str) -> SessionState | None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._session_key(session_id))
                pipe.xrange(self._stream_key(session_id), count=1)
                row, first = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc
        if not row:
            return None
        fields = {key.decode(): value.decode() for key, value in row.items()}
        first_kept = int(first[0][0].split(b"-")[0]) if first else None
        return SessionState(
            session_id=session_id,
            user_id=fields.get("user_id", ""),
            last_seq=int(fields.get("last_seq", "0")),
            last_cseq=int(fields.get("last_cseq", "0")),
            backend_last_id=int(fields.get("backend_last_id", "0")),
            first_kept=first_kept,
        )

    async def create(self, session_id: str, user_id: str) -> None:
        key = self._session_key(session_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={"user_id": user_id, "last_seq": 0, "last_cseq": 0})
                pipe.pexpire(key, self.max_age_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc

    async def entries(self, session_id: str, after: int, upto: int) -> list[Entry]:
        """Persisted messages with ``after < seq <= upto``, in order."""
        if upto <= after:
            return []
        try:
            rows = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self._redis.xrange(
                    self._stream_key(session_id), min=f"{after + 1}-0", max=f"{upto}-9"
                ),
            )
        except (RedisError, OSError) as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc
        return [
            Entry(
                session_id,
                int(entry_id.split(b"-")[0]),
                fields[b"d"],
                fields.get(b"b") == b"1",
                int(fields.get(b"m", b"0")),
            )
            for entry_id, fields in rows
        ]

    async def persist(self, entries: list[Entry], cseqs: dict[str, int]) -> set[str]:
        """Append entries and record client seqs in one pipeline.

        Returns the sessions whose writes were refused (superseded: the session lives on
        another pod now). Raises :class:`ReplayStoreUnavailable` if Redis cannot be reached.
        """
        touched: dict[str, tuple[int, int]] = {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xadd(
                        self._stream_key(entry.session_id),
                        {
                            "d": entry.data,
                            "b": b"1" if entry.binary else b"0",
                            "m": entry.message_id,
                        },
                        id=f"{entry.seq}-1",
                        maxlen=self.max_messages,
                        approximate=False,
                    )
                    last_seq, last_id = touched.get(entry.session_id, (0, 0))
                    touched[entry.session_id] = (
                        max(last_seq, entry.seq),
                        max(last_id, entry.message_id),
                    )
                for session_id, (last_seq, last_id) in touched.items():
                    key = self._session_key(session_id)
                    fields: dict[str, int] = {"last_seq": last_seq}
                    if last_id:
                        fields["backend_last_id"] = last_id
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                    pipe.pexpire(key, self.max_age_ms)
                    pipe.pexpire(self._stream_key(session_id), self.max_age_ms)
                for session_id, cseq in cseqs.items():
                    key = self._session_key(session_id)
                    pipe.hset(key, "last_cseq", cseq)
                    pipe.pexpire(key, self.max_age_ms)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc
        refused = set()
        for entry, result in zip(entries, results[: len(entries)], strict=True):
            if isinstance(result, ResponseError):
                refused.add(entry.session_id)
            elif isinstance(result, Exception):
                raise ReplayStoreUnavailable(str(result))
        return refused


class ReplayWriter:
    """Batches persistence of all sessions of a pod: one pipeline per event-loop turn.

    :meth:`persist` resolves once the entry is durable (True), refused because the
    session moved (False), or Redis is unreachable (None: delivery goes on without a
    replay copy, and the error is counted).
    """

    def __init__(self, store: ReplayStore, on_error: Callable[[], None]) -> None:
        self._store = store
        self._on_error = on_error
        self._entries: list[tuple[Entry, asyncio.Future[bool | None]]] = []
        self._cseqs: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def persist(self, entry: Entry) -> asyncio.Future[bool | None]:
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._entries.append((entry, future))
        self._wake.set()
        return future

    def record_cseq(self, session_id: str, cseq: int) -> None:
        self._cseqs[session_id] = cseq
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let this turn's messages join the batch
            batch, self._entries = self._entries, []
            cseqs, self._cseqs = self._cseqs, {}
            try:
                refused = await self._store.persist([entry for entry, _ in batch], cseqs)
            except ReplayStoreUnavailable as exc:
                self._on_error()
                log.warning("replay_store_unavailable", error=str(exc)[:200])
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
                continue
            for entry, future in batch:
                if not future.done():
                    future.set_result(entry.session_id not in refused)
