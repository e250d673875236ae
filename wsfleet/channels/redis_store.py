"""Channels on Redis or a Redis Cluster (see docs/channels.md for the key layout).

Every key of a channel carries the channel as its hash tag (``{ns}:{ch:<channel>}:…``),
so each script call touches one slot. A publication is one script call: its offset
(``HINCRBY`` on the meta hash; the epoch made if there is none), its history entry
(``XADD`` with ``MAXLEN``, id ``<offset>-0``), the TTLs and the ``PUBLISH`` to the
channel's topic, whose bytes are :func:`wsfleet.channels.messages.publication_message`'s.
Presence expiry follows Redis's own clock (``TIME`` in the scripts): no two clocks are
compared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

from wsfleet.channels.messages import Publication, publish_time_field
from wsfleet.channels.store import (
    META_TTL_S,
    NO_POSITION,
    ChannelStoreUnavailable,
    History,
    HistoryRequest,
    Position,
    PresenceUpdate,
    PublishRequest,
)
from wsfleet.redis_client import ERRORS, connect
from wsfleet.redis_scripts import PipelinedScript
from wsfleet.registry.base import user_bucket
from wsfleet.registry.redis_registry import connection_key_prefix, user_key

# KEYS: meta, stream. ARGV: topic, data, binary (0/1), info ('' or a JSON object), history
# size (0: none: no offset, no epoch, only the PUBLISH), history TTL ms, meta TTL ms, a new
# epoch (used when the channel has none: its stream starts afresh), the publish time in
# Unix microseconds (0: none; only in the topic message, not in the history). Returns
# {offset, epoch}.
_PUBLISH_LUA = """
local extra = ''
if ARGV[9] ~= '0' then extra = ',"t":' .. ARGV[9] end
if ARGV[4] ~= '' then extra = extra .. ',"i":' .. ARGV[4] end
if ARGV[5] == '0' then
  redis.call('PUBLISH', ARGV[1], 'p{"o":0,"e":"","b":' .. ARGV[3] .. extra .. '}\\n' .. ARGV[2])
  return {0, ''}
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[8]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0',
             'd', ARGV[2], 'b', ARGV[3], 'i', ARGV[4])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 'd', ARGV[2], 'b', ARGV[3])
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[1],
           'p{"o":' .. offset .. ',"e":"' .. epoch .. '","b":' .. ARGV[3] .. extra .. '}\\n'
           .. ARGV[2])
return {offset, epoch}
"""
_PUBLISH = PipelinedScript(_PUBLISH_LUA)

# KEYS: meta, stream. ARGV: after (-1: position only), limit, meta TTL ms, a new epoch
# (made, with an empty stream, when the channel has none). Returns {epoch, offset, entries}.
_HISTORY_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local after = tonumber(ARGV[1])
local entries = {}
if after >= 0 and after < offset then
  entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])
end
return {epoch, offset, entries}
"""
_HISTORY = PipelinedScript(_HISTORY_LUA)

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: presence hash, expiry zset. ARGV: TTL ms, topic, then per update: present (0/1),
# announce (0/1), session, info. Announcements go to the topic: 'j' or 'l' + info.
_UPDATE_PRESENCE_LUA = (
    _NOW_MS
    + """
local expires = now + tonumber(ARGV[1])
for i = 3, #ARGV, 4 do
  local session, info = ARGV[i + 2], ARGV[i + 3]
  if ARGV[i] == '1' then
    redis.call('HSET', KEYS[1], session, info)
    redis.call('ZADD', KEYS[2], expires, session)
    if ARGV[i + 1] == '1' then redis.call('PUBLISH', ARGV[2], 'j' .. info) end
  else
    local removed = redis.call('HDEL', KEYS[1], session)
    redis.call('ZREM', KEYS[2], session)
    if ARGV[i + 1] == '1' and removed == 1 then redis.call('PUBLISH', ARGV[2], 'l' .. info) end
  end
end
for k = 1, 2 do  -- the keys live as long as their longest-lived entry, never shorter
  if redis.call('PTTL', KEYS[k]) < tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[k], ARGV[1])
  end
end
return 0
"""
)
_UPDATE_PRESENCE = PipelinedScript(_UPDATE_PRESENCE_LUA)

_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, session in ipairs(gone) do redis.call('HDEL', KEYS[1], session) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
"""

# KEYS: presence hash, expiry zset. Entries past their expiry are removed first.
_PRESENCE_LUA = _NOW_MS + _PRUNE + "return redis.call('HVALS', KEYS[1])\n"
_PRESENCE = PipelinedScript(_PRESENCE_LUA)

_PRESENCE_STATS_LUA = (
    _NOW_MS
    + _PRUNE
    + """
local users, clients, distinct = {}, 0, 0
for _, info in ipairs(redis.call('HVALS', KEYS[1])) do
  clients = clients + 1
  local ok, entry = pcall(cjson.decode, info)
  if ok and type(entry) == 'table' and type(entry.user) == 'string' and not users[entry.user] then
    users[entry.user] = true
    distinct = distinct + 1
  end
end
return {clients, distinct}
"""
)
_PRESENCE_STATS = PipelinedScript(_PRESENCE_STATS_LUA)

# KEYS: the user's set of connection ids. ARGV: the prefix of the user's connection
# records, the prefix of the gateways' command topics, the command. One PUBLISH per
# gateway holding a connection of the user; returns how many.
_COMMAND_USER_LUA = """
local pods, count = {}, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local pod = redis.call('HGET', ARGV[1] .. id, 'shard')
  if pod and not pods[pod] then
    pods[pod] = true
    count = count + 1
    redis.call('PUBLISH', ARGV[2] .. pod, ARGV[3])
  end
end
return count
"""
_COMMAND_USER = PipelinedScript(_COMMAND_USER_LUA)


def new_epoch() -> str:
    return os.urandom(4).hex()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisChannelStore:
    """:class:`~wsfleet.channels.store.ChannelStore` on a Redis server or a Redis Cluster."""

    def __init__(self, url: str, namespace: str = "wsfleet", max_connections: int = 16) -> None:
        self._redis = connect(url, max_connections)
        self._ns = namespace

    @property
    def client(self) -> Any:
        """The Redis client (a gateway's pub/sub connection is made from it)."""
        return self._redis

    def _key(self, channel: str, what: str) -> str:
        return f"{self._ns}:{{ch:{channel}}}:{what}"

    def topic(self, channel: str) -> str:
        return f"{self._ns}:topic:{channel}"

    def command_topic(self, pod_id: str) -> str:
        return f"{self._ns}:podcmd:{pod_id}"

    async def publish(
        self, requests: Sequence[PublishRequest]
    ) -> list[Position | ChannelStoreUnavailable]:
        try:
            results = await _PUBLISH.run(self._redis, [self._publish_call(r) for r in requests])
        except ERRORS as exc:
            return [ChannelStoreUnavailable(str(exc)) for _ in requests]
        positions: list[Position | ChannelStoreUnavailable] = []
        for result in results:
            if isinstance(result, Exception):
                positions.append(ChannelStoreUnavailable(str(result)))
            else:
                offset, epoch = cast(list[Any], result)
                positions.append(Position(_text(epoch), int(offset)) if offset else NO_POSITION)
        return positions

    def _publish_call(self, request: PublishRequest) -> tuple[Sequence[str], Sequence[Any]]:
        ttl_ms = _ms(request.history_ttl_s)
        return (
            (self._key(request.channel, "meta"), self._key(request.channel, "hist")),
            (
                self.topic(request.channel),
                request.data,
                int(request.binary),
                request.info,
                request.history_size,
                ttl_ms,
                max(ttl_ms, _ms(META_TTL_S)),
                new_epoch(),
                publish_time_field(request.published_at),
            ),
        )

    async def history(
        self, requests: Sequence[HistoryRequest]
    ) -> list[History | ChannelStoreUnavailable]:
        calls = [
            (
                (self._key(r.channel, "meta"), self._key(r.channel, "hist")),
                (
                    -1 if r.after is None else r.after,
                    max(1, r.limit),
                    max(_ms(r.history_ttl_s), _ms(META_TTL_S)),
                    new_epoch(),
                ),
            )
            for r in requests
        ]
        try:
            results = await _HISTORY.run(self._redis, calls)
        except ERRORS as exc:
            return [ChannelStoreUnavailable(str(exc)) for _ in requests]
        answers: list[History | ChannelStoreUnavailable] = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, Exception):
                answers.append(ChannelStoreUnavailable(str(result)))
                continue
            epoch, offset, entries = cast(list[Any], result)
            epoch_text = _text(epoch)
            publications = [_publication(request.channel, epoch_text, e) for e in entries]
            answers.append(History(Position(epoch_text, int(offset)), publications))
        return answers

    async def update_presence(self, updates: Sequence[PresenceUpdate], ttl_s: float) -> None:
        if not updates:
            return
        by_channel: dict[str, list[PresenceUpdate]] = {}
        for update in updates:
            by_channel.setdefault(update.channel, []).append(update)
        calls = []
        for channel, mine in by_channel.items():
            args: list[Any] = [_ms(ttl_s), self.topic(channel)]
            for u in mine:
                args += [int(u.present), int(u.announce), u.session, u.info]
            calls.append(
                ((self._key(channel, "presence"), self._key(channel, "presence-exp")), args)
            )
        try:
            results = await _UPDATE_PRESENCE.run(self._redis, calls)
        except ERRORS as exc:
            raise ChannelStoreUnavailable(str(exc)) from exc
        for result in results:
            if isinstance(result, Exception):
                raise ChannelStoreUnavailable(str(result))

    async def presence(self, channel: str) -> list[bytes]:
        result = await self._one(_PRESENCE, channel)
        return [bytes(info) for info in cast(list[bytes], result)]

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        clients, users = cast(list[int], await self._one(_PRESENCE_STATS, channel))
        return int(clients), int(users)

    async def _one(self, script: PipelinedScript, channel: str) -> object:
        keys = (self._key(channel, "presence"), self._key(channel, "presence-exp"))
        try:
            [result] = await script.run(self._redis, [(keys, ())])
        except ERRORS as exc:
            raise ChannelStoreUnavailable(str(exc)) from exc
        if isinstance(result, Exception):
            raise ChannelStoreUnavailable(str(result))
        return result

    async def command_user(self, user_id: str, message: bytes) -> int:
        call = (
            (user_key(self._ns, user_id),),
            (
                connection_key_prefix(self._ns, user_bucket(user_id)),
                f"{self._ns}:podcmd:",
                message,
            ),
        )
        try:
            [result] = await _COMMAND_USER.run(self._redis, [call])
        except ERRORS as exc:
            raise ChannelStoreUnavailable(str(exc)) from exc
        if isinstance(result, Exception):
            raise ChannelStoreUnavailable(str(result))
        return int(cast(int, result))

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except ERRORS as exc:
            raise ChannelStoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _publication(channel: str, epoch: str, entry: Any) -> Publication:
    entry_id, flat = entry
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return Publication(
        channel,
        int(_text(entry_id).split("-")[0]),
        epoch,
        bytes(fields.get(b"d", b"")),
        fields.get(b"b") == b"1",
        bytes(fields.get(b"i", b"")),
    )
