"""ReplayWriter batching: handshakes' new sessions and messages' entries, one store call
per kind per batch, sessions before entries; failures reach every waiting handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sidecar.core.session import Entry
from sidecar.memory_replay_store import MemoryReplayStore
from sidecar.replay_store import ReplayStoreUnavailable, ReplayWriter


class RecordingStore(MemoryReplayStore):
    """The memory store, recording every call in order; ``down`` makes every call fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.down = False

    async def create(self, sessions: Sequence[tuple[str, str]]) -> None:
        self.calls.append(("create", list(sessions)))
        if self.down:
            raise ReplayStoreUnavailable("redis is down")
        await super().create(sessions)

    async def persist(self, entries: list[Entry], cseqs: dict[str, int]) -> set[str]:
        self.calls.append(("persist", [(e.session_id, e.seq) for e in entries]))
        if self.down:
            raise ReplayStoreUnavailable("redis is down")
        return await super().persist(entries, cseqs)


class Watcher:
    def __init__(self) -> None:
        self.heard: list[tuple[int, int, bool | None]] = []
        self.called = asyncio.Event()

    def persisted(self, upto_seq: int, message_id: int, durable: bool | None) -> None:
        self.heard.append((upto_seq, message_id, durable))
        self.called.set()


async def test_concurrent_handshakes_share_one_create_and_come_before_entries() -> None:
    store = RecordingStore()
    errors: list[None] = []
    writer = ReplayWriter(store, on_error=lambda: errors.append(None))
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
    created = await store.load("s49")
    assert created is not None and created.user_id == "user-49"
    assert [e.seq for e in await store.entries("old", 0, 7)] == [7]


async def test_a_failed_create_raises_in_every_waiting_handshake() -> None:
    store = RecordingStore()
    store.down = True
    writer = ReplayWriter(store, on_error=lambda: None)
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
    assert await store.load("s0") is None and await store.load("s9") is not None


async def test_a_handshake_given_up_while_waiting_does_not_break_the_batch() -> None:
    store = RecordingStore()
    writer = ReplayWriter(store, on_error=lambda: None)
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
    assert await store.load("kept") is not None


async def test_a_superseded_session_hears_so_and_grants_and_client_seqs_are_written() -> None:
    store = RecordingStore()
    other_pod = store.pod()
    await other_pod.persist([Entry("moved", seq, b"x", False) for seq in range(1, 6)], {})
    writer = ReplayWriter(store, on_error=lambda: None)
    writer.start()
    try:
        moved, kept = Watcher(), Watcher()
        writer.persist(moved, Entry("moved", 3, b"late", False, 8))
        writer.persist(kept, Entry("here", 1, b"hi", False))
        writer.grant("here", "chat:1", True)
        writer.record_cseq("here", 4)
        await asyncio.wait_for(kept.called.wait(), 5)
    finally:
        await writer.stop()
    assert moved.heard == [(3, 8, False)] and kept.heard == [(1, 0, True)]
    assert len(store.calls) == 1  # one batch: grants, entries and client seqs together
    here = await store.load("here")
    assert here is not None and (here.last_cseq, here.granted) == (4, {"chat:1"})
