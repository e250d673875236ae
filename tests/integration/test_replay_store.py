"""The replay store against a real Redis: what a resume reads is what was persisted."""

from __future__ import annotations

import pytest

from sidecar.replay_store import Entry, ReplayStore, ReplayStoreUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """One Redis server, or a 3-master Redis Cluster (keys tagged by session)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    return str(request.getfixturevalue("redis_cluster_url"))


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"replay-{request.node.name}"  # tests sharing a cluster keep apart


def _entries(session: str, seqs: range, message_id: int = 0) -> list[Entry]:
    return [Entry(session, seq, f"m{seq}".encode(), False, message_id) for seq in seqs]


async def test_a_batch_of_several_sessions_is_read_back_in_order_with_its_counters(
    redis_url: str, ns: str
) -> None:
    store = ReplayStore(redis_url, namespace=ns, max_messages=100, max_age_s=60)
    try:
        await store.create([("s1", "alice")])
        await store.create([("s2", "bob")])
        batch = [*_entries("s1", range(1, 4), message_id=7), *_entries("s2", range(1, 3))]
        batch.append(Entry("s2", 3, b"\x00\xff", True, 9))
        assert await store.persist(batch, {"s1": 5}) == set()

        got = await store.entries("s1", after=1, upto=3)
        assert [(e.seq, e.data, e.binary, e.message_id) for e in got] == [
            (2, b"m2", False, 7),
            (3, b"m3", False, 7),
        ]
        binary = await store.entries("s2", after=2, upto=10)
        assert [(e.seq, e.data, e.binary, e.message_id) for e in binary] == [
            (3, b"\x00\xff", True, 9)
        ]
        s1, s2 = await store.load("s1"), await store.load("s2")
        assert s1 is not None and s2 is not None
        assert (s1.user_id, s1.last_seq, s1.last_cseq, s1.backend_last_id, s1.first_kept) == (
            "alice",
            3,
            5,
            7,
            1,
        )
        assert (s2.last_seq, s2.last_cseq, s2.backend_last_id) == (3, 0, 9)
        assert await store.load("nobody") is None
    finally:
        await store.close()


async def test_a_client_seq_alone_is_recorded_and_keeps_the_session_alive(
    redis_url: str, ns: str
) -> None:
    store = ReplayStore(redis_url, namespace=ns, max_age_s=30)
    try:
        await store.create([("s1", "alice")])
        assert await store.persist([], {"s1": 4}) == set()
        state = await store.load("s1")
        assert state is not None and (state.last_cseq, state.last_seq) == (4, 0)
        ttl_ms = await store._redis.pttl(f"{ns}:sess:{{s1}}")
        assert 25_000 < ttl_ms <= 30_000
    finally:
        await store.close()


async def test_the_buffer_keeps_only_the_newest_entries_and_expires_with_the_window(
    redis_url: str, ns: str
) -> None:
    store = ReplayStore(redis_url, namespace=ns, max_messages=5, max_age_s=20)
    try:
        await store.create([("s1", "alice")])
        await store.persist(_entries("s1", range(1, 11)), {})
        state = await store.load("s1")
        assert state is not None and (state.first_kept, state.last_seq) == (6, 10)
        assert [e.seq for e in await store.entries("s1", 0, 10)] == [6, 7, 8, 9, 10]
        assert 15_000 < await store._redis.pttl(f"{ns}:replay:{{s1}}") <= 20_000
    finally:
        await store.close()


async def test_the_buffer_keeps_at_most_its_byte_bound_of_the_newest_data(
    redis_url: str, ns: str
) -> None:
    store = ReplayStore(redis_url, namespace=ns, max_messages=1000, max_age_s=20, max_bytes=10_000)
    try:
        await store.create([("s2", "alice")])
        big = [Entry("s2", seq, b"x" * 3000, False) for seq in range(1, 11)]  # 30 KB in all
        for entry in big:  # one batch each, and then all at once on another session
            await store.persist([entry], {})
        kept = await store.entries("s2", 0, 10)
        assert [e.seq for e in kept] == [8, 9, 10]  # 9 KB: the newest that fit
        state = await store.load("s2")
        assert state is not None and (state.first_kept, state.last_seq) == (8, 10)
        assert int(await store._redis.hget(f"{ns}:sess:{{s2}}", "bytes")) == 9000
        await store.create([("s3", "bob")])
        await store.persist([Entry("s3", n, b"y" * 3000, False) for n in range(1, 11)], {})
        assert [e.seq for e in await store.entries("s3", 0, 10)] == [8, 9, 10]
        await store.persist([Entry("s3", 11, b"z" * 20_000, False)], {})  # alone over the bound
        assert await store.entries("s3", 0, 11) == []  # kept nothing: a resume gets a resync
    finally:
        await store.close()


async def test_a_pod_that_lost_the_session_to_another_pod_has_its_writes_refused(
    redis_url: str, ns: str
) -> None:
    old_pod = ReplayStore(redis_url, namespace=ns)
    new_pod = ReplayStore(redis_url, namespace=ns)
    try:
        await old_pod.create([("s1", "alice")])
        await old_pod.persist(_entries("s1", range(1, 4)), {})
        # the client resumed elsewhere from seq 3 and the new pod went on
        assert await new_pod.persist(_entries("s1", range(4, 8)), {}) == set()
        refused = await old_pod.persist(
            [*_entries("s1", range(4, 5)), *_entries("s2", range(1, 2))], {}
        )
        assert refused == {"s1"}  # s2, in the same batch, is untouched by s1's refusal
        assert [e.data for e in await new_pod.entries("s1", 3, 7)] == [b"m4", b"m5", b"m6", b"m7"]
    finally:
        await old_pod.close()
        await new_pod.close()


async def test_redis_going_away_is_reported_not_hidden(redis_server) -> None:
    store = ReplayStore(redis_server.url)
    try:
        await store.create([("s1", "alice")])
        redis_server.stop()
        with pytest.raises(ReplayStoreUnavailable):
            await store.persist(_entries("s1", range(1, 2)), {})
        with pytest.raises(ReplayStoreUnavailable):
            await store.load("s1")
    finally:
        await store.close()


async def test_a_flushed_script_cache_is_reloaded_without_losing_the_batch(redis_server) -> None:
    store = ReplayStore(redis_server.url)
    try:
        await store.create([("s1", "alice")])
        await store.persist(_entries("s1", range(1, 3)), {})
        await store._redis.script_flush()  # as after a Redis restart
        assert await store.persist(_entries("s1", range(3, 5)), {}) == set()
        assert [e.seq for e in await store.entries("s1", 0, 10)] == [1, 2, 3, 4]
    finally:
        await store.close()
