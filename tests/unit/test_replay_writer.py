"""ReplayWriter batching: handshakes' new sessions and messages' entries, one store call
per kind per batch, sessions before entries; no handshake waits for its record, and a
failure is counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
        for i in range(50):
            writer.create(f"s{i}", f"user-{i}")
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


async def test_a_failed_create_is_counted_and_the_writer_lives_on() -> None:
    store = RecordingStore()
    store.down = True
    errors: list[None] = []
    writer = ReplayWriter(store, on_error=lambda: errors.append(None))
    writer.start()
    try:
        first = Watcher()
        for i in range(3):
            writer.create(f"s{i}", "alice")
        writer.persist(first, Entry("s0", 1, b"x", False))
        await asyncio.wait_for(first.called.wait(), 5)
        store.down = False  # the writer lives on: the next session is written
        second = Watcher()
        writer.create("s9", "bob")
        writer.persist(second, Entry("s9", 1, b"y", False))
        await asyncio.wait_for(second.called.wait(), 5)
    finally:
        await writer.stop()
    assert errors == [None, None]  # the create and the persist of the first batch
    assert first.heard == [(1, 0, None)] and second.heard == [(1, 0, True)]
    assert [kind for kind, _ in store.calls] == ["create", "persist", "create", "persist"]
    assert await store.load("s0") is None and await store.load("s9") is not None


async def test_a_handshake_does_not_wait_for_its_record_which_lands_before_its_entries() -> None:
    store = RecordingStore()
    writer = ReplayWriter(store, on_error=lambda: None)
    writer.start()
    try:
        watcher = Watcher()
        assert writer.create("new", "alice") is None  # nothing to await
        assert store.calls == []  # not written yet: the batch has not run
        writer.persist(watcher, Entry("new", 1, b"hello", False))
        await asyncio.wait_for(watcher.called.wait(), 5)
    finally:
        await writer.stop()
    assert store.calls == [("create", [("new", "alice")]), ("persist", [("new", 1)])]
    record = await store.load("new")
    assert record is not None and record.user_id == "alice" and record.last_seq == 1


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
