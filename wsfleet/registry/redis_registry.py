"""Redis registry.

Keys (``{ns}`` is the fleet namespace, ``wsfleet`` by default):

- ``{ns}:pod:{pod_id}`` hash of :class:`PodRecord` fields, with a TTL the pod refreshes;
- ``{ns}:pods`` set of pod ids (members whose hash expired are pruned on read);
- ``{ns}:membership`` pub/sub channel: a pod id each time a pod joins, changes state or leaves;
- ``{ns}:hash_sources`` hash: per pool, where Envoy hashes its users (JSON, from the policy).

Expiry is left to Redis (key TTL), so no two clocks are ever compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wsfleet.redis_scripts import PipelinedScript
from wsfleet.registry.base import (
    ConnectionRecord,
    HashSources,
    PodRecord,
    RegistryUnavailable,
)
from wsfleet.registry.signing import SIGNATURE_FIELD, PodSigner

# Record many connections in one call, each unless its user already holds the maximum
# (0: no maximum). O(1) per connection while the user's set is below the maximum (SCARD);
# only a user at the maximum has the set pruned of connections whose records expired (a
# crashed pod's stop counting after their TTL), and counted again.
# KEYS[1]: the pod's set; then per connection: its user's set, its record.
# ARGV: maximum, TTL in ms, record key prefix, field count F, the F field names, then per
# connection its id and its F values. Returns 1 (recorded) or 0 (refused) per connection.
_ADD_CONNECTIONS_LUA = """
local limit, ttl, prefix, nf = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local answers, fields, at = {}, {}, 5 + nf
for i = 2, #KEYS, 2 do
  local user, record, id = KEYS[i], KEYS[i + 1], ARGV[at]
  local admit = 1
  if limit > 0 and redis.call('SCARD', user) >= limit then
    local live = 0
    for _, other in ipairs(redis.call('SMEMBERS', user)) do
      if redis.call('EXISTS', prefix .. other) == 1 then
        live = live + 1
      else
        redis.call('SREM', user, other)
      end
    end
    if live >= limit then
      admit = 0
    end
  end
  if admit == 1 then
    for f = 1, nf do
      fields[2 * f - 1] = ARGV[4 + f]
      fields[2 * f] = ARGV[at + f]
    end
    redis.call('HSET', record, unpack(fields))
    redis.call('PEXPIRE', record, ttl)
    redis.call('SADD', user, id)
    redis.call('PEXPIRE', user, ttl)
    redis.call('SADD', KEYS[1], id)
  end
  answers[#answers + 1] = admit
  at = at + 1 + nf
end
redis.call('PEXPIRE', KEYS[1], ttl)
return answers
"""
_ADD_CONNECTIONS = PipelinedScript(_ADD_CONNECTIONS_LUA)

# Forget many connections in one call. KEYS[1]: the pod's set; then per connection: its
# record, its user's set. ARGV: the connection ids.
_REMOVE_CONNECTIONS_LUA = """
for i = 1, #ARGV do
  redis.call('DEL', KEYS[2 * i])
  redis.call('SREM', KEYS[2 * i + 1], ARGV[i])
end
redis.call('SREM', KEYS[1], unpack(ARGV))
return 0
"""
_REMOVE_CONNECTIONS = PipelinedScript(_REMOVE_CONNECTIONS_LUA)

# Touch many connections in one call: a pong refreshes the record's last_ping and TTL and
# its user's set TTL. A record that has expired meanwhile is not brought back half-made.
# KEYS: per connection its record, its user's set; ARGV[1]: TTL in ms, then one last_ping
# per connection.
_TOUCH_CONNECTIONS_LUA = """
local ttl = ARGV[1]
for i = 1, #KEYS, 2 do
  if redis.call('PEXPIRE', KEYS[i], ttl) == 1 then
    redis.call('HSET', KEYS[i], 'last_ping', ARGV[(i + 1) / 2 + 1])
    redis.call('PEXPIRE', KEYS[i + 1], ttl)
  end
end
return 0
"""
_TOUCH_CONNECTIONS = PipelinedScript(_TOUCH_CONNECTIONS_LUA)
CHUNK = 500  # connections per script call: no call holds Redis for long


class RedisRegistry:
    """:class:`~wsfleet.registry.base.Registry` on a Redis server."""

    def __init__(
        self,
        url: str,
        namespace: str = "wsfleet",
        max_connections: int = 32,
        signer: PodSigner | None = None,
    ) -> None:
        # with a signer, pod records written are signed and records read must verify
        self.signer = signer
        # A bounded pool: a handshake surge waits for a connection instead of opening
        # hundreds (each with its own buffers) that then stay idle.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5.0,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._ns = namespace

    def _pod_key(self, pod_id: str) -> str:
        return f"{self._ns}:pod:{pod_id}"

    def _conn_key(self, connection_id: str) -> str:
        return f"{self._ns}:conn:{connection_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self._ns}:user:{user_id}"

    def _pod_conns_key(self, pod_id: str) -> str:
        return f"{self._ns}:podconns:{pod_id}"

    @property
    def _pods_key(self) -> str:
        return f"{self._ns}:pods"

    @property
    def _channel(self) -> str:
        return f"{self._ns}:membership"

    async def put_pod(self, pod: PodRecord, ttl_s: float) -> bool:
        key = self._pod_key(pod.pod_id)
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(key, "state")
                fields: dict[Any, Any] = dict(pod.to_fields())
                if self.signer is not None:
                    fields[SIGNATURE_FIELD] = self.signer.sign(pod)
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, ttl_ms)
                pipe.sadd(self._pods_key, pod.pod_id)
                previous_state, *_ = await pipe.execute()
            if previous_state != pod.state.value:
                await self._redis.publish(self._channel, pod.pod_id)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return previous_state is not None

    async def remove_pod(self, pod_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._pod_key(pod_id))
                pipe.srem(self._pods_key, pod_id)
                pipe.publish(self._channel, pod_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def list_pods(self, pool: str | None = None) -> list[PodRecord]:
        try:
            pod_ids = sorted(str(pod_id) for pod_id in await self._redis.smembers(self._pods_key))
            if not pod_ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for pod_id in pod_ids:
                    pipe.hgetall(self._pod_key(pod_id))
                rows: list[dict[str, str]] = await pipe.execute()
            expired = [pod_id for pod_id, row in zip(pod_ids, rows, strict=True) if not row]
            if expired:
                await self._redis.srem(self._pods_key, *expired)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        pods = []
        for row in rows:
            pod = self._trusted(row)
            if pod is not None and (pool is None or pod.pool == pool):
                pods.append(pod)
        return pods

    def _trusted(self, row: dict[str, str]) -> PodRecord | None:
        """The record in ``row``, or None: empty, half-written, foreign, or (with a
        signer) not signed with the fleet's registry key."""
        if not row:
            return None
        try:
            pod = PodRecord.from_fields(row)
        except ValueError:
            return None
        if self.signer is not None and not self.signer.verify(pod, row.get(SIGNATURE_FIELD, "")):
            return None  # counted by the signer; the control plane exports the count
        return pod

    async def get_pod(self, pod_id: str) -> PodRecord | None:
        try:
            row = cast(dict[str, str], await self._redis.hgetall(self._pod_key(pod_id)))
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return self._trusted(row)

    async def live_pod_ids(self) -> set[str]:
        try:
            pod_ids = sorted(str(pod_id) for pod_id in await self._redis.smembers(self._pods_key))
            if not pod_ids:
                return set()
            async with self._redis.pipeline(transaction=False) as pipe:
                for pod_id in pod_ids:
                    pipe.exists(self._pod_key(pod_id))
                present: list[int] = await pipe.execute()
            expired = [pod_id for pod_id, alive in zip(pod_ids, present, strict=True) if not alive]
            if expired:
                await self._redis.srem(self._pods_key, *expired)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return {pod_id for pod_id, alive in zip(pod_ids, present, strict=True) if alive}

    async def add_connections(
        self, records: list[ConnectionRecord], ttl_s: float, max_per_user: int
    ) -> set[str]:
        if not records:
            return set()
        ttl_ms = max(1, int(ttl_s * 1000))
        names = ConnectionRecord.field_names()
        head = (max_per_user, ttl_ms, f"{self._ns}:conn:", len(names), *names)
        chunks = list(self._chunks(records))
        calls = []
        for shard, chunk in chunks:
            keys = [self._pod_conns_key(shard)]
            args: list[object] = [*head]
            for record in chunk:
                keys += (self._user_key(record.user_id), self._conn_key(record.connection_id))
                args.append(record.connection_id)
                args += record.field_values()
            calls.append((keys, args))
        try:
            answers = await _ADD_CONNECTIONS.run(self._redis, calls)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        refused = set()
        for (_, chunk), answer in zip(chunks, answers, strict=True):
            if isinstance(answer, Exception):
                raise RegistryUnavailable(str(answer))
            for record, admitted in zip(chunk, cast(list[int], answer), strict=True):
                if not admitted:
                    refused.add(record.connection_id)
        return refused

    async def remove_connections(self, records: list[ConnectionRecord]) -> None:
        if not records:
            return
        calls = []
        for shard, chunk in self._chunks(records):
            keys = [self._pod_conns_key(shard)]
            for record in chunk:
                keys += (self._conn_key(record.connection_id), self._user_key(record.user_id))
            calls.append((keys, [record.connection_id for record in chunk]))
        try:
            results = await _REMOVE_CONNECTIONS.run(self._redis, calls)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        for result in results:
            if isinstance(result, Exception):
                raise RegistryUnavailable(str(result))

    @staticmethod
    def _chunks(
        records: list[ConnectionRecord],
    ) -> Iterator[tuple[str, list[ConnectionRecord]]]:
        """The records by pod, at most :data:`CHUNK` at a time (in a stable order)."""
        by_shard: dict[str, list[ConnectionRecord]] = {}
        for record in records:
            by_shard.setdefault(record.shard, []).append(record)
        for shard, group in by_shard.items():
            for start in range(0, len(group), CHUNK):
                yield shard, group[start : start + CHUNK]

    async def touch_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        if not records:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        calls = []
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            keys = []
            for record in chunk:
                keys.append(self._conn_key(record.connection_id))
                keys.append(self._user_key(record.user_id))
            calls.append((keys, [ttl_ms, *(str(record.last_ping) for record in chunk)]))
        try:
            results = await _TOUCH_CONNECTIONS.run(self._redis, calls)
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in {record.shard for record in records}:
                    pipe.pexpire(self._pod_conns_key(shard), ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        for result in results:
            if isinstance(result, Exception):
                raise RegistryUnavailable(str(result))

    async def put_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        await self.add_connections(records, ttl_s, max_per_user=0)  # no quota: write them all

    async def put_hash_sources(self, pools: dict[str, HashSources]) -> None:
        if not pools:
            return
        mapping: dict[Any, Any] = {pool: sources.to_json() for pool, sources in pools.items()}
        try:
            await self._redis.hset(f"{self._ns}:hash_sources", mapping=mapping)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def get_hash_sources(self, pool: str) -> HashSources | None:
        try:
            text = await self._redis.hget(f"{self._ns}:hash_sources", pool)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        if text is None:
            return None
        try:
            return HashSources.from_json(str(text))
        except ValueError:
            return None  # not written by a control plane of this version: as if unsaid

    async def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        try:
            row = cast(dict[str, str], await self._redis.hgetall(self._conn_key(connection_id)))
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        try:
            return ConnectionRecord.from_fields(row) if row else None
        except ValueError:
            return None

    async def connections_of_user(self, user_id: str) -> list[ConnectionRecord]:
        return await self._connections_in(self._user_key(user_id))

    async def connections_of_pod(self, pod_id: str) -> list[ConnectionRecord]:
        return await self._connections_in(self._pod_conns_key(pod_id))

    async def _connections_in(self, set_key: str) -> list[ConnectionRecord]:
        try:
            ids = sorted(str(i) for i in await self._redis.smembers(set_key))
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection_id in ids:
                    pipe.hgetall(self._conn_key(connection_id))
                rows: list[dict[str, str]] = await pipe.execute()
            gone = [i for i, row in zip(ids, rows, strict=True) if not row]
            if gone:
                await self._redis.srem(set_key, *gone)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        records = []
        for row in rows:
            if row:
                try:
                    records.append(ConnectionRecord.from_fields(row))
                except ValueError:
                    continue
        return records

    async def membership_changes(self) -> AsyncIterator[str]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield str(message["data"])
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()
