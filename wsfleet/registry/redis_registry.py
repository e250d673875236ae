"""Redis registry, on one Redis server or a Redis Cluster (:mod:`wsfleet.redis_client`).

Keys (``{ns}`` is the fleet namespace, ``wsfleet`` by default; ``{c<b>}`` is a hash tag,
``<b>`` the user's bucket, :func:`~wsfleet.registry.base.user_bucket`):

- ``{ns}:pod:{pod_id}`` hash of :class:`PodRecord` fields (and, signed, ``signed_at`` and
  ``sig``: :mod:`wsfleet.registry.signing`), with a TTL the pod refreshes;
- ``{ns}:pods`` set of pod ids (members whose hash expired are pruned on read);
- ``{ns}:membership`` pub/sub channel: a pod id each time a pod joins, changes state or
  leaves (on a cluster a PUBLISH reaches every node's subscribers);
- ``{ns}:hash_sources`` hash: per pool, where Envoy hashes its users (JSON, from the policy);
- ``{ns}:channel_config``: the channel namespaces (JSON, from the policy);
- ``{ns}:edge_drains`` hash: per Envoy node id being drained, its
  :class:`~wsfleet.registry.base.EdgeDrain` (JSON);
- ``{ns}:envoys:{replica}``: the Envoys connected to one control-plane replica (a JSON list
  of :class:`~wsfleet.registry.base.EnvoyPresence`, written whole), with a TTL the replica
  refreshes, and ``{ns}:envoy_replicas`` set of those replicas (members whose list
  expired are pruned on read);
- ``{ns}:{name}_lease``: the holder of lease ``name`` (``fleet_metrics``: the control-plane
  replica that exports the fleet-wide series), with the lease's TTL;
- ``{ns}:{c<b>}:user:{user_id}`` set of the user's connection ids, and
  ``{ns}:{c<b>}:conn:{connection_id}`` hash of a :class:`ConnectionRecord`: a connection
  id begins with its user's bucket, so a user's set and records share a slot and the
  quota script touches one slot;
- ``{ns}:podconns:{pod_id}`` set of a pod's connection ids (its own slot: written with
  plain commands beside the scripts).

Expiry is left to Redis (key TTL), so no two clocks are ever compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, cast

from wsfleet.redis_client import ERRORS, batches, connect
from wsfleet.redis_scripts import Extra, PipelinedScript
from wsfleet.redis_urls import is_cluster_url
from wsfleet.registry.base import (
    MAX_ENVOYS,
    ConnectionRecord,
    EdgeDrain,
    EnvoyPresence,
    HashSources,
    PodRecord,
    RegistryUnavailable,
    check_lease,
    presences_from_json,
    presences_to_json,
    user_bucket,
)
from wsfleet.registry.signing import PodSigner

# Record many connections in one call, each unless its user already holds the maximum
# (0: no maximum). O(1) per connection while the user's set is below the maximum (SCARD);
# only a user at the maximum has the set pruned of connections whose records expired (a
# crashed pod's stop counting after their TTL), and counted again. A record's key ends
# with its id, and the user's other records share its prefix (and slot).
# KEYS: per connection its user's set, its record.
# ARGV: maximum, TTL in ms, field count F, the F field names, then per connection its id
# and its F values in one argument, each as `<length in bytes>:<value>` (each argument
# costs the pod more to encode than the script to read back).
# Returns 1 (recorded) or 0 (refused) per connection.
_ADD_CONNECTIONS_LUA = """
local limit, ttl, nf = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local answers, fields, at = {}, {}, 4 + nf
for i = 1, #KEYS, 2 do
  local user, record, id, values = KEYS[i], KEYS[i + 1], ARGV[at], ARGV[at + 1]
  local admit = 1
  if limit > 0 and redis.call('SCARD', user) >= limit then
    local prefix, live = string.sub(record, 1, #record - #id), 0
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
    local pos = 1
    for f = 1, nf do
      local colon = string.find(values, ':', pos, true)
      local length = tonumber(string.sub(values, pos, colon - 1))
      fields[2 * f - 1] = ARGV[3 + f]
      fields[2 * f] = string.sub(values, colon + 1, colon + length)
      pos = colon + length + 1
    end
    redis.call('HSET', record, unpack(fields))
    redis.call('PEXPIRE', record, ttl)
    redis.call('SADD', user, id)
    redis.call('PEXPIRE', user, ttl)
  end
  answers[#answers + 1] = admit
  at = at + 2
end
return answers
"""
_ADD_CONNECTIONS = PipelinedScript(_ADD_CONNECTIONS_LUA)

# Forget many connections in one call. KEYS: per connection its record, its user's set.
# ARGV: the connection ids.
_REMOVE_CONNECTIONS_LUA = """
for i = 1, #ARGV do
  redis.call('DEL', KEYS[2 * i - 1])
  redis.call('SREM', KEYS[2 * i], ARGV[i])
end
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
TOUCH_CONNECTIONS = PipelinedScript(_TOUCH_CONNECTIONS_LUA)
CHUNK = 500  # connections per script call: no call holds Redis for long

# Take or keep a lease: taken when free (or expired: Redis dropped the key), kept (TTL
# started again) by its holder, refused to anyone else. KEYS[1]: the lease; ARGV: the
# holder, the TTL in ms. Returns 1 if the holder holds it now, else 0.
_HOLD_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_HOLD_LEASE = PipelinedScript(_HOLD_LEASE_LUA)


def _bucket_of(record: ConnectionRecord) -> str:
    return record.connection_id[:4]


def connection_key_prefix(namespace: str, bucket: str) -> str:
    """Where the records of a bucket's connections live: the prefix, then the id."""
    return f"{namespace}:{{c{bucket}}}:conn:"


def user_key(namespace: str, user_id: str) -> str:
    """The set of a user's connection ids (in the slot of the user's records)."""
    return f"{namespace}:{{c{user_bucket(user_id)}}}:user:{user_id}"


def _length_prefixed(values: tuple[str, ...]) -> bytes:
    """``<length in bytes>:<value>`` for each value, one after another."""
    return b"".join(b"%d:%s" % (len(v), v) for v in (value.encode() for value in values))


class RedisRegistry:
    """:class:`~wsfleet.registry.base.Registry` on a Redis server or a Redis Cluster."""

    def __init__(
        self,
        url: str,
        namespace: str = "wsfleet",
        max_connections: int = 32,
        signer: PodSigner | None = None,
    ) -> None:
        # with a signer, pod records written are signed (a pod's key signs only its own)
        # and records read must verify: the control plane's holds the fleet's root key
        self.signer = signer
        # a bounded pool: a handshake surge waits for a connection instead of opening
        # hundreds (each with its own buffers) that then stay idle
        self._redis = connect(url, max_connections, decode_responses=True)
        self._ns = namespace
        # on a cluster, a script call takes the connections of one bucket (one slot)
        self._slot_tag: Callable[[ConnectionRecord], str] | None = (
            _bucket_of if is_cluster_url(url) else None
        )

    def _pod_key(self, pod_id: str) -> str:
        return f"{self._ns}:pod:{pod_id}"

    def _conn_key(self, connection_id: str) -> str:
        return connection_key_prefix(self._ns, connection_id[:4]) + connection_id

    def _user_key(self, user_id: str) -> str:
        return user_key(self._ns, user_id)

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
                    fields.update(self.signer.signature_fields(pod, key))
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, ttl_ms)
                pipe.sadd(self._pods_key, pod.pod_id)
                previous_state, *_ = await pipe.execute()
            if previous_state != pod.state.value:
                await self._redis.publish(self._channel, pod.pod_id)
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return previous_state is not None

    async def remove_pod(self, pod_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._pod_key(pod_id))
                pipe.srem(self._pods_key, pod_id)
                await pipe.execute()
            await self._redis.publish(self._channel, pod_id)  # not pipelined on a cluster
        except ERRORS as exc:
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
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        pods = []
        for pod_id, row in zip(pod_ids, rows, strict=True):
            pod = self._trusted(pod_id, row)
            if pod is not None and (pool is None or pod.pool == pool):
                pods.append(pod)
        return pods

    def _trusted(self, pod_id: str, row: dict[str, str]) -> PodRecord | None:
        """The record in ``row`` (read under ``pod_id``'s key), or None: empty,
        half-written, foreign, or (with a signer) not signed by ``pod_id`` for this key,
        stale, or older than one read before (:mod:`wsfleet.registry.signing`)."""
        if not row:
            return None
        try:
            pod = PodRecord.from_fields(row)
        except ValueError:
            return None
        if pod.pod_id != pod_id:
            return None  # a record copied under another pod's key
        key = self._pod_key(pod_id)
        if self.signer is not None and not self.signer.verify(pod, key, pod_id, row):
            return None  # counted by the signer; the control plane exports the count
        return pod

    async def get_pod(self, pod_id: str) -> PodRecord | None:
        try:
            row = cast(dict[str, str], await self._redis.hgetall(self._pod_key(pod_id)))
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return self._trusted(pod_id, row)

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
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return {pod_id for pod_id, alive in zip(pod_ids, present, strict=True) if alive}

    async def add_connections(
        self, records: list[ConnectionRecord], ttl_s: float, max_per_user: int
    ) -> set[str]:
        if not records:
            return set()
        self._check_buckets(records)
        ttl_ms = max(1, int(ttl_s * 1000))
        names = ConnectionRecord.field_names()
        head = (max_per_user, ttl_ms, len(names), *names)
        groups = list(batches(records, CHUNK, self._slot_tag))
        calls = []
        for group in groups:
            keys: list[str] = []
            args: list[object] = [*head]
            for record in group:
                keys += (self._user_key(record.user_id), self._conn_key(record.connection_id))
                args += (record.connection_id, _length_prefixed(record.field_values()))
            calls.append((keys, args))
        try:  # the pods' sets optimistically, in the same round trip; the refused go next
            answers = await _ADD_CONNECTIONS.run(
                self._redis, calls, self._pod_sets(records, "add", ttl_ms)
            )
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        refused = []
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, Exception):
                raise RegistryUnavailable(str(answer))
            refused += [
                record
                for record, admitted in zip(group, cast(list[int], answer), strict=True)
                if not admitted
            ]
        if refused:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    self._pod_sets(refused, "remove")(pipe)
                    await pipe.execute()
            except ERRORS as exc:
                raise RegistryUnavailable(str(exc)) from exc
        return {record.connection_id for record in refused}

    def _check_buckets(self, records: list[ConnectionRecord]) -> None:
        """On a cluster a record lives in its user's slot: its id must say so."""
        if self._slot_tag is None:
            return
        for record in records:
            if not record.connection_id.startswith(user_bucket(record.user_id)):
                raise ValueError(
                    f"connection id {record.connection_id!r} does not begin with its "
                    f"user's bucket {user_bucket(record.user_id)!r} (new_connection_id)"
                )

    def _pod_sets(
        self,
        records: list[ConnectionRecord],
        change: Literal["add", "remove", "keep"],
        ttl_ms: int = 0,
    ) -> Extra:
        """What to add to a pipeline: the records' ids added to or removed from their
        pods' sets (or neither: ``keep``), and the sets' TTL refreshed when ``ttl_ms``."""
        by_pod: dict[str, list[str]] = {}
        for record in records:
            by_pod.setdefault(record.shard, []).append(record.connection_id)

        def extra(pipe: Any) -> None:
            for pod_id, ids in by_pod.items():
                key = self._pod_conns_key(pod_id)
                if change == "add":
                    pipe.sadd(key, *ids)
                elif change == "remove":
                    pipe.srem(key, *ids)
                if ttl_ms:
                    pipe.pexpire(key, ttl_ms)

        return extra

    async def remove_connections(self, records: list[ConnectionRecord]) -> None:
        if not records:
            return
        calls = []
        for group in batches(records, CHUNK, self._slot_tag):
            keys: list[str] = []
            for record in group:
                keys += (self._conn_key(record.connection_id), self._user_key(record.user_id))
            calls.append((keys, [record.connection_id for record in group]))
        try:
            results = await _REMOVE_CONNECTIONS.run(
                self._redis, calls, self._pod_sets(records, "remove")
            )
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        for result in results:
            if isinstance(result, Exception):
                raise RegistryUnavailable(str(result))

    async def touch_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        if not records:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        calls = []
        for group in batches(records, CHUNK, self._slot_tag):
            keys = []
            for record in group:
                keys.append(self._conn_key(record.connection_id))
                keys.append(self._user_key(record.user_id))
            calls.append((keys, [ttl_ms, *(str(record.last_ping) for record in group)]))
        try:
            results = await TOUCH_CONNECTIONS.run(
                self._redis, calls, self._pod_sets(records, "keep", ttl_ms)
            )
        except ERRORS as exc:
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
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def get_hash_sources(self, pool: str) -> HashSources | None:
        try:
            text = await self._redis.hget(f"{self._ns}:hash_sources", pool)
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        if text is None:
            return None
        try:
            return HashSources.from_json(str(text))
        except ValueError:
            return None  # not written by a control plane of this version: as if unsaid

    async def put_channel_config(self, text: str) -> None:
        try:
            await self._redis.set(f"{self._ns}:channel_config", text)
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def get_channel_config(self) -> str | None:
        try:
            text = await self._redis.get(f"{self._ns}:channel_config")
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return None if text is None else str(text)

    async def put_edge_drain(self, drain: EdgeDrain) -> None:
        try:
            await self._redis.hset(f"{self._ns}:edge_drains", drain.node, drain.to_json())
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def remove_edge_drain(self, node: str) -> bool:
        try:
            return bool(await self._redis.hdel(f"{self._ns}:edge_drains", node))
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def edge_drains(self) -> dict[str, EdgeDrain]:
        try:
            rows = cast(dict[str, str], await self._redis.hgetall(f"{self._ns}:edge_drains"))
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        drains: dict[str, EdgeDrain] = {}
        for node, text in rows.items():
            with contextlib.suppress(ValueError):
                drain = EdgeDrain.from_json(text)
                if drain.node == node:
                    drains[node] = drain
        return drains

    async def put_envoys(self, replica: str, envoys: list[EnvoyPresence], ttl_s: float) -> None:
        key = f"{self._ns}:envoys:{replica}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if envoys:  # one key written whole: a reader never sees half a list
                    pipe.set(key, presences_to_json(envoys), px=max(1, int(ttl_s * 1000)))
                    pipe.sadd(self._envoy_replicas_key, replica)
                else:
                    pipe.delete(key)
                    pipe.srem(self._envoy_replicas_key, replica)
                await pipe.execute()
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def envoys(self) -> list[EnvoyPresence]:
        try:
            replicas = sorted(str(r) for r in await self._redis.smembers(self._envoy_replicas_key))
            if not replicas:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for replica in replicas:
                    pipe.get(f"{self._ns}:envoys:{replica}")
                texts: list[str | None] = await pipe.execute()
            expired = [r for r, text in zip(replicas, texts, strict=True) if text is None]
            if expired:
                await self._redis.srem(self._envoy_replicas_key, *expired)
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        listed: list[EnvoyPresence] = []
        for replica, text in zip(replicas, texts, strict=True):
            if text is not None and len(listed) < MAX_ENVOYS:
                found = presences_from_json(str(text), replica)
                listed += sorted(found, key=lambda envoy: envoy.node)
        return listed[:MAX_ENVOYS]

    @property
    def _envoy_replicas_key(self) -> str:
        return f"{self._ns}:envoy_replicas"

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        check_lease(name, holder, ttl_s)
        call = ([f"{self._ns}:{name}_lease"], [holder, max(1, int(ttl_s * 1000))])
        try:
            [held] = await _HOLD_LEASE.run(self._redis, [call])
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        if isinstance(held, Exception):
            raise RegistryUnavailable(str(held))
        return held == 1

    async def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        try:
            row = cast(dict[str, str], await self._redis.hgetall(self._conn_key(connection_id)))
        except ERRORS as exc:
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
        except ERRORS as exc:
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
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc
        finally:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except ERRORS as exc:
            raise RegistryUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()
