"""One contract, three replay stores: memory (tests), Redis and a Redis Cluster (real
fleets). What a resume reads is what was persisted, within the window's bounds."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from sidecar.core.session import Entry
from sidecar.memory_replay_store import MemoryReplayStore
from sidecar.redis_replay_store import RedisReplayStore
from sidecar.replay_store import ReplayStore, ReplayStoreUnavailable
from tests.conftest import RedisProcess
from tests.helpers import until

pytestmark = pytest.mark.integration

SHORT_AGE_S = 0.1  # a window that runs out while the test waits (nothing needs it longer)
EXPIRY_BOUND_S = 10.0  # how long a short window may take to be seen gone: a bound, not a measure


@dataclasses.dataclass
class Stores:
    """Stores of pods over the same sessions, and time passing for their windows."""

    open: Callable[..., ReplayStore]  # a pod's store: open(max_messages, max_age_s, max_bytes)
    passes_until: Callable[[Callable[[], Awaitable[bool]], str], Awaitable[None]]


@pytest_asyncio.fixture(params=["memory", "redis", "redis-cluster"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    opened: list[RedisReplayStore] = []
    if request.param == "memory":
        now = [1000.0]
        shared = MemoryReplayStore(clock=lambda: now[0])

        def open_memory(
            max_messages: int = 1000, max_age_s: float = 300, max_bytes: int = 1 << 20
        ) -> ReplayStore:
            return shared.pod(max_messages, max_age_s, max_bytes)

        async def clock_passes_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
            for _ in range(int(EXPIRY_BOUND_S / 0.05)):  # the fake clock, in small steps
                if await check():
                    return
                now[0] += 0.05
            raise TimeoutError(f"{what}: not seen in {EXPIRY_BOUND_S} s of the fake clock")

        yield Stores(open_memory, clock_passes_until)
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster_url")
    namespace = f"replay-{request.node.name}"  # tests sharing a cluster keep apart

    def open_redis(
        max_messages: int = 1000, max_age_s: float = 300, max_bytes: int = 1 << 20
    ) -> ReplayStore:
        store = RedisReplayStore(url, namespace, max_messages, max_age_s, max_bytes)
        opened.append(store)
        return store

    async def real_time_passes_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
        await until(check, EXPIRY_BOUND_S, what)  # Redis expires keys on its own clock

    yield Stores(open_redis, real_time_passes_until)
    for store in opened:
        await store.close()


def _entries(session: str, seqs: range, message_id: int = 0, tag: str = "m") -> list[Entry]:
    return [Entry(session, seq, f"{tag}{seq}".encode(), False, message_id) for seq in seqs]


async def test_a_batch_of_several_sessions_is_read_back_in_order_with_its_counters(
    stores: Stores,
) -> None:
    store = stores.open(max_messages=100, max_age_s=60)
    await store.create([("s1", "alice")])
    await store.create([("s2", "bob")])
    batch = [*_entries("s1", range(1, 4), message_id=7), *_entries("s2", range(1, 3))]
    batch.append(Entry("s2", 3, b"\x00\xff", True, 9))
    # an empty message, data that looks like the batch's index, the largest backend id
    batch += [Entry("s2", 4, b"", False, 0), Entry("s2", 5, b"1:0:2:3,", False, 2**64 - 1)]
    assert await store.persist(batch, {"s1": 5}) == set()

    got = await store.entries("s1", after=1, upto=3)
    assert [(e.seq, e.data, e.binary, e.message_id) for e in got] == [
        (2, b"m2", False, 7),
        (3, b"m3", False, 7),
    ]
    binary = await store.entries("s2", after=2, upto=10)
    assert [(e.seq, e.data, e.binary, e.message_id) for e in binary] == [
        (3, b"\x00\xff", True, 9),
        (4, b"", False, 0),
        (5, b"1:0:2:3,", False, 2**64 - 1),
    ]
    assert await store.entries("s1", after=3, upto=3) == []
    s1, s2 = await store.load("s1"), await store.load("s2")
    assert s1 is not None and s2 is not None
    assert (s1.user_id, s1.last_seq, s1.last_cseq, s1.backend_last_id, s1.first_kept) == (
        "alice",
        3,
        5,
        7,
        1,
    )
    assert (s2.user_id, s2.last_seq, s2.last_cseq, s2.backend_last_id) == ("bob", 5, 0, 2**64 - 1)
    assert await store.load("nobody") is None


async def test_a_client_seq_alone_is_recorded_and_refreshes_the_window(stores: Stores) -> None:
    long, short = stores.open(max_age_s=60), stores.open(max_age_s=SHORT_AGE_S)
    await long.create([("s1", "alice")])
    assert await long.persist([], {"s1": 4}) == set()
    state = await long.load("s1")
    assert state is not None and (state.user_id, state.last_cseq, state.last_seq) == (
        "alice",
        4,
        0,
    )
    await short.persist([], {"s1": 5})  # the window is now the short one: it runs out

    async def forgotten() -> bool:
        return await long.load("s1") is None

    await stores.passes_until(forgotten, "the session forgotten after its short window")


async def test_the_buffer_keeps_the_newest_entries_and_expires_with_its_grants(
    stores: Stores,
) -> None:
    store = stores.open(max_messages=5, max_age_s=60)
    await store.create([("s1", "alice")])
    await store.persist(_entries("s1", range(1, 11)), {})
    await store.update_grants([("s1", "chat:1", True), ("s1", "chat:2", True)])
    await store.update_grants([("s1", "chat:1", False)])
    state = await store.load("s1")
    assert state is not None and (state.first_kept, state.last_seq) == (6, 10)
    assert state.granted == {"chat:2"}
    assert [e.seq for e in await store.entries("s1", 0, 10)] == [6, 7, 8, 9, 10]

    short = stores.open(max_messages=5, max_age_s=SHORT_AGE_S)
    await short.persist(_entries("s1", range(11, 12)), {})  # every record's window: short

    async def forgotten() -> bool:
        return await store.load("s1") is None and await store.entries("s1", 0, 11) == []

    await stores.passes_until(forgotten, "the session and its buffer forgotten")
    await store.create([("s1", "alice")])  # the same id again: nothing of the old one
    state = await store.load("s1")
    assert state is not None and (state.last_seq, state.first_kept, state.granted) == (
        0,
        None,
        frozenset(),
    )


async def test_the_buffer_keeps_at_most_its_byte_bound_of_the_newest_data(stores: Stores) -> None:
    store = stores.open(max_messages=1000, max_age_s=20, max_bytes=10_000)
    await store.create([("s2", "alice")])
    for seq in range(1, 11):  # one batch each (30 KB in all), then all at once on another
        await store.persist([Entry("s2", seq, b"x" * 3000, False)], {})
    kept = await store.entries("s2", 0, 10)
    assert [e.seq for e in kept] == [8, 9, 10]  # 9 KB: the newest that fit
    state = await store.load("s2")
    assert state is not None and (state.first_kept, state.last_seq) == (8, 10)
    await store.create([("s3", "bob")])
    await store.persist([Entry("s3", n, b"y" * 3000, False) for n in range(1, 11)], {})
    assert [e.seq for e in await store.entries("s3", 0, 10)] == [8, 9, 10]
    await store.persist([Entry("s3", 11, b"z" * 20_000, False)], {})  # alone over the bound
    assert await store.entries("s3", 0, 11) == []  # kept nothing: a resume gets a resync
    await store.persist([Entry("s3", 12, b"w" * 4000, False)], {})  # the count starts again
    assert [e.seq for e in await store.entries("s3", 0, 12)] == [12]


async def test_a_pod_that_lost_the_session_to_another_pod_has_its_writes_refused(
    stores: Stores,
) -> None:
    old_pod, new_pod = stores.open(), stores.open()
    await old_pod.create([("s1", "alice")])
    await old_pod.persist(_entries("s1", range(1, 4)), {})
    # the client resumed elsewhere from seq 3 and the new pod went on
    assert await new_pod.persist(_entries("s1", range(4, 8)), {}) == set()
    refused = await old_pod.persist(
        [*_entries("s1", range(4, 5)), *_entries("s2", range(1, 2))], {}
    )
    assert refused == {"s1"}  # s2, in the same batch, is untouched by s1's refusal
    assert [e.data for e in await new_pod.entries("s1", 3, 7)] == [b"m4", b"m5", b"m6", b"m7"]
    assert [e.seq for e in await new_pod.entries("s2", 0, 1)] == [1]


async def test_a_superseded_pods_late_batch_moves_no_counter_back(stores: Stores) -> None:
    old_pod, new_pod = stores.open(), stores.open()
    await old_pod.create([("s1", "alice")])
    await old_pod.persist(_entries("s1", range(1, 4), 5, "old"), {"s1": 2})
    # the client resumed on the new pod from seq 3, which went on; the old pod's last batch
    # (older numbers on every count) lands after it
    assert await new_pod.persist(_entries("s1", range(4, 8), 20, "new"), {"s1": 6}) == set()
    assert await old_pod.persist(_entries("s1", range(4, 6), 9, "old"), {"s1": 3}) == {"s1"}
    assert await old_pod.persist([], {"s1": 4}) == set()  # a client seq alone: not refused
    state = await new_pod.load("s1")
    assert state is not None
    assert (state.last_seq, state.last_cseq, state.backend_last_id) == (7, 6, 20)
    assert [e.data for e in await new_pod.entries("s1", 0, 10)] == [
        b"old1",
        b"old2",
        b"old3",
        b"new4",
        b"new5",
        b"new6",
        b"new7",
    ]


async def test_a_batch_partly_below_the_last_seq_is_refused_whole(stores: Stores) -> None:
    old_pod, new_pod = stores.open(), stores.open()
    await new_pod.create([("s1", "alice")])
    await new_pod.persist(_entries("s1", range(1, 8), 20, "new"), {})
    assert await old_pod.persist(_entries("s1", range(6, 10), 30, "old"), {}) == {"s1"}
    state = await new_pod.load("s1")
    assert state is not None and (state.last_seq, state.backend_last_id) == (7, 20)
    # nothing of it was appended: the session's owner goes on from where it was
    assert await new_pod.persist(_entries("s1", range(8, 10), 21, "new"), {}) == set()
    assert [e.data for e in await new_pod.entries("s1", 5, 10)] == [
        b"new6",
        b"new7",
        b"new8",
        b"new9",
    ]
    state = await new_pod.load("s1")
    assert state is not None and (state.last_seq, state.backend_last_id) == (9, 21)


async def test_a_batch_stops_at_the_first_entry_not_above_the_last_seq(stores: Stores) -> None:
    store = stores.open()
    await store.create([("s1", "alice")])
    await store.persist(_entries("s1", range(1, 4)), {})
    # two connections of one session on one pod, numbering from the same seq, in one batch
    batch = [*_entries("s1", range(4, 6), 8, "a"), *_entries("s1", range(4, 7), 9, "b")]
    assert await store.persist(batch, {}) == {"s1"}
    assert [e.data for e in await store.entries("s1", 3, 10)] == [b"a4", b"a5"]
    state = await store.load("s1")
    assert state is not None and (state.last_seq, state.backend_last_id) == (5, 8)


async def test_backend_ids_only_grow_and_compare_exactly_as_uint64s(stores: Stores) -> None:
    store = stores.open()
    await store.create([("s1", "alice")])
    # 2**53 and 2**53 + 1 are one and the same double: a comparison of Lua numbers misses it
    for seq, message_id, highest in [
        (1, 2**53, 2**53),
        (2, 2**53 + 1, 2**53 + 1),
        (3, 2**64 - 1, 2**64 - 1),
        (4, 10, 2**64 - 1),  # a lower id (a backend that started again): no step back
        (5, 0, 2**64 - 1),  # none
    ]:
        assert await store.persist(_entries("s1", range(seq, seq + 1), message_id), {}) == set()
        state = await store.load("s1")
        assert state is not None and (state.last_seq, state.backend_last_id) == (seq, highest)


async def test_the_memory_stores_windows_run_on_its_clock() -> None:
    now = [100.0]
    store = MemoryReplayStore(max_age_s=30, clock=lambda: now[0])
    await store.create([("s1", "alice"), ("s2", "bob")])
    await store.update_grants([("s1", "chat:1", True)])
    now[0] = 120.0
    await store.persist(_entries("s1", range(1, 3)), {})  # s1's records: until 150
    now[0] = 129.9
    assert await store.load("s2") is not None
    now[0] = 130.0
    assert await store.load("s2") is None
    now[0] = 149.9
    state = await store.load("s1")
    assert state is not None and state.granted == {"chat:1"} and state.first_kept == 1
    now[0] = 150.0
    assert await store.load("s1") is None and await store.entries("s1", 0, 2) == []


async def test_redis_going_away_is_reported_not_hidden(redis_server: RedisProcess) -> None:
    store = RedisReplayStore(redis_server.url)
    try:
        await store.create([("s1", "alice")])
        redis_server.stop()
        with pytest.raises(ReplayStoreUnavailable):
            await store.persist(_entries("s1", range(1, 2)), {})
        with pytest.raises(ReplayStoreUnavailable):
            await store.load("s1")
    finally:
        await store.close()


async def test_a_flushed_script_cache_is_reloaded_without_losing_the_batch(
    redis_server: RedisProcess,
) -> None:
    store = RedisReplayStore(redis_server.url)
    try:
        await store.create([("s1", "alice")])
        await store.persist(_entries("s1", range(1, 3)), {})
        await store._redis.script_flush()  # as after a Redis restart
        assert await store.persist(_entries("s1", range(3, 5)), {}) == set()
        assert [e.seq for e in await store.entries("s1", 0, 10)] == [1, 2, 3, 4]
    finally:
        await store.close()
