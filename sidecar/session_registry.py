"""This pod's connections in the registry.

A connection is added (with the fleet-wide per-user quota checked atomically)
before its handshake completes, and removed when it closes. Handshakes that arrive
together share one round trip: adds wait for the next turn of the event loop (or, while
the writer is busy, out the batch spacing of ``wsfleet.batch_spacing``) and go out in one
script call; removals are not waited for and go out the same way. While tracing, each
batch is a ``wsfleet.registry_batch`` span linked to the handshakes it answers (their
span contexts are kept only then: nothing per handshake while tracing is off).
``last_ping`` updates are only marked here and written in one pipeline every
``flush_s``, never one round trip per pong; the same write refreshes TTLs.

A registry outage never drops a live connection: operations fail open (the
connection is served, the error counted), and once the registry answers
again the pod writes its whole set back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import structlog
from opentelemetry.trace import SpanContext

from sidecar.metrics import RedisTimer
from wsfleet import tracing
from wsfleet.batch_spacing import BATCH_SPACING_S, Spacing
from wsfleet.registry import ConnectionRecord, QuotaExceeded, Registry, RegistryUnavailable

log = structlog.get_logger()


class UnwritableRecord(ValueError):
    """A connection record with a field that is not UTF-8 text: the store cannot take it,
    and in a batch it would sink every other record with it."""


def check_writable(record: ConnectionRecord) -> None:
    """Raise :class:`UnwritableRecord` unless every field encodes as UTF-8."""
    for name, value in zip(record.field_names(), record.field_values(), strict=True):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise UnwritableRecord(f"the connection's {name} is not UTF-8 text") from None


FLUSH_SLICE = 250  # pongs per registry write of a flush (the loop serves clients between)


class SessionRegistry:
    """Keeps the registry's view of this pod's connections true."""

    def __init__(
        self,
        registry: Registry,
        ttl_s: float,
        flush_s: float,
        max_per_user: int,
        on_error: Callable[[], None] = lambda: None,
        spacing_s: float = BATCH_SPACING_S,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._flush_s = flush_s
        self._max_per_user = max_per_user
        self._on_error = on_error
        self._records: dict[str, ConnectionRecord] = {}
        self._pings: dict[str, float] = {}
        self._adding: list[tuple[ConnectionRecord, asyncio.Future[bool]]] = []
        self._removing: list[ConnectionRecord] = []
        self._links: list[SpanContext] = []  # the waiting handshakes' spans (tracing only)
        self._writer: asyncio.Task[None] | None = None
        self._spacing = Spacing(spacing_s)
        self.needs_resync = False
        self.redis_timer = RedisTimer()  # wsfleet_gateway_redis_batch_seconds

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[ConnectionRecord]:
        return list(self._records.values())

    async def add(self, record: ConnectionRecord) -> None:
        """Record a new connection; raises ``QuotaExceeded`` past the per-user maximum,
        :class:`UnwritableRecord` (before it joins a batch) when the store cannot take it."""
        check_writable(record)
        admitted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._adding.append((record, admitted))
        if tracing.enabled():
            link = tracing.current_link()
            if link is not None:
                self._links.append(link)
        self._start_writer()
        if not await admitted:
            raise QuotaExceeded(record.user_id)
        self._records[record.connection_id] = record

    def remove(self, connection_id: str) -> None:
        """Forget a closed connection (written with the next batch; nothing to wait for)."""
        record = self._records.pop(connection_id, None)
        self._pings.pop(connection_id, None)
        if record is not None:
            self._removing.append(record)
            self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Write what queued up, batch after batch, until nothing is left."""
        while self._adding or self._removing:
            await self._spacing.pace()  # let this turn's (or these 2 ms') handshakes join
            adding, self._adding = self._adding, []
            removing, self._removing = self._removing, []
            links = self._links
            if links:
                self._links = []
            refused: set[str] = set()
            try:
                with tracing.batch(
                    tracing.REGISTRY_BATCH_SPAN,
                    links,
                    batch_size=len(adding),
                    batch_removals=len(removing),
                ):
                    refused = await self._send(adding, removing)
            except RegistryUnavailable as exc:  # fail open: serve, write back later
                self._failed("add" if adding else "remove", exc)
            finally:  # whatever happened, no handshake is left waiting
                for record, admitted in adding:
                    if not admitted.done():
                        admitted.set_result(record.connection_id not in refused)

    async def _send(
        self,
        adding: list[tuple[ConnectionRecord, asyncio.Future[bool]]],
        removing: list[ConnectionRecord],
    ) -> set[str]:
        """One batch's round trips; the connections refused (over their user's quota)."""
        if removing:
            with self.redis_timer.time("connections_remove"):
                await self._registry.remove_connections(removing)
        if not adding:
            return set()
        records = [record for record, _ in adding]
        with self.redis_timer.time("connections_add"):
            return await self._registry.add_connections(records, self._ttl_s, self._max_per_user)

    def touch(self, connection_id: str, now: float) -> None:
        """Mark a pong; written with the next flush."""
        if connection_id in self._records:
            self._pings[connection_id] = now

    async def flush(self) -> None:
        """Write the pongs marked since the last flush, :data:`FLUSH_SLICE` connections at
        a time: between two slices the event loop serves the clients (at 12,500 connections
        a pod marks ~1,700 pongs per 2 s flush; written as one batch, building and packing
        it held the loop for tens of milliseconds, every client's ping waiting behind it)."""
        pings, self._pings = self._pings, {}
        touched: list[ConnectionRecord] = []
        for index, (connection_id, at) in enumerate(pings.items(), 1):
            record = self._records.get(connection_id)
            if record is not None:
                record = self._records[connection_id] = dataclasses.replace(record, last_ping=at)
                touched.append(record)
            if index % FLUSH_SLICE == 0:
                await asyncio.sleep(0)
        try:
            with self.redis_timer.time("connections_flush"):
                if self.needs_resync:
                    await self._registry.put_connections(self.records, self._ttl_s)
                    self.needs_resync = False
                    log.info("registry_resynced", connections=len(self._records))
                else:
                    for start in range(0, len(touched), FLUSH_SLICE):
                        part = touched[start : start + FLUSH_SLICE]
                        live = [r for r in part if r.connection_id in self._records]
                        await self._registry.touch_connections(live, self._ttl_s)
                        await asyncio.sleep(0)  # a turn of the loop, whatever the store did
        except RegistryUnavailable as exc:
            self._failed("flush", exc)

    def mark_resync(self) -> None:
        """Write the whole set with the next flush (the registry was away or lost data)."""
        self.needs_resync = True

    def _failed(self, operation: str, exc: RegistryUnavailable) -> None:
        self._on_error()
        if not self.needs_resync:
            log.warning("registry_write_failed", operation=operation, error=str(exc))
        self.needs_resync = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()
