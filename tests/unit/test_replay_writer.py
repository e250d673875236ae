"""ReplayWriter batching: handshakes' new sessions and messages' entries, one store call
per kind per batch, sessions before entries; failures reach every waiting handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sidecar.core.session import Entry
from sidecar.replay_store import ReplayStoreUnavailable, ReplayWriter


class FakeStore:
    """Records every call, in order; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.down = False

    async def create(self, sessions: Sequence[tuple[str, str]]) -> None:
        self.calls.append(("create", list(sessions)))
        if self.down:
            raise ReplayStoreUnavailable("redis is down")

    async def persist(self, entries: list[Entry], cseqs: dict[str, int]) -> set[str]:
        self.calls.append(("persist", [(e.session_id, e.seq) for e in entries]))
        if self.down:
            raise ReplayStoreUnavailable("redis is down")
        return set()


class Watcher:
    def __init__(self) -> None:
        self.heard: list[tuple[int, int, bool | None]] = []
        self.called = asyncio.Event()

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> None:
        self.heard.append((upto_seq, message_id, durable))
        self.called.set()


async def test_concurrent_handshakes_share_one_create_and_come_before_entries() -> None:
    store = FakeStore()
    errors: list[None] = []
    writer = ReplayWriter(store, on_error=lambda: errors.append(None))  # type: ignore[arg-type]
    writer.start()
    try:
        watcher = Watcher()
        writer.persist(watcher, Entry("old", 7, b"x", False, 3))
        await asyncio.gather(*(writer.create(f"s{i}", f"user-{i}") for i in range(50)))
        await asyncio.wait_for(watcher.called.wait(), 5)
    finally:
        await writer.stop()
    assert store.calls[0] == ("create", [(f"s{i}", f"user-{i}") for i in range(50)])
    assert store.calls[1] == ("persist", [("old", 7)])
    assert len(store.calls) == 2
    assert watcher.heard == [(7, 3, True)]
    assert errors == []


async def test_a_failed_create_raises_in_every_waiting_handshake() -> None:
    store = FakeStore()
    store.down = True
    writer = ReplayWriter(store, on_error=lambda: None)  # type: ignore[arg-type]
    writer.start()
    try:
        results = await asyncio.gather(
            *(writer.create(f"s{i}", "alice") for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, ReplayStoreUnavailable) for r in results)
        store.down = False  # the writer lives on: the next handshake is written
        await asyncio.wait_for(writer.create("s9", "bob"), 5)
    finally:
        await writer.stop()
    assert [kind for kind, _ in store.calls] == ["create", "create"]


async def test_a_handshake_given_up_while_waiting_does_not_break_the_batch() -> None:
    store = FakeStore()
    writer = ReplayWriter(store, on_error=lambda: None)  # type: ignore[arg-type]
    writer.start()
    try:
        given_up = asyncio.ensure_future(writer.create("gone", "alice"))
        kept = asyncio.ensure_future(writer.create("kept", "bob"))
        await asyncio.sleep(0)  # both are queued for the batch
        given_up.cancel()
        await asyncio.wait_for(kept, 5)
        with pytest.raises(asyncio.CancelledError):
            await given_up
    finally:
        await writer.stop()
    assert store.calls == [("create", [("gone", "alice"), ("kept", "bob")])]
