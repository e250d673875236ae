"""Resumable sessions in Redis (:class:`RedisReplayStore`): each session's counters and
its replay buffer, shared by every pod of the fleet.

- ``{ns}:sess:{<session_id>}`` hash (the id is the key's hash tag: on a Redis Cluster a
  session's keys share a slot, and every script call touches one session's keys):
  ``user_id``, ``last_seq`` (last persisted outbound seq),
  ``last_cseq`` (last client seq delivered to the backend), ``backend_last_id`` (highest
  backend message_id persisted): each only grows, whichever pod writes and in whatever
  order its batches land;
- ``{ns}:replay:{<session_id>}`` stream: one entry per outbound message, id ``<seq>-1``,
  fields ``d`` (data), ``b`` (binary flag), ``m`` (backend message_id); trimmed, oldest
  first, to ``max_messages`` entries and ``max_bytes`` of data (the hash's ``bytes``);
- ``{ns}:grants:{<session_id>}`` set: the channels the server subscribed the session to
  (its client may subscribe to them again when it resumes, on any pod).

Each key expires ``max_age_s`` after its last write (see :mod:`sidecar.replay_store` for
the contract; :mod:`sidecar.memory_replay_store` keeps the same one in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from sidecar.core.session import Entry
from sidecar.replay_store import ReplayStoreUnavailable, SessionState
from wsfleet.redis_client import ERRORS, batches, connect
from wsfleet.redis_scripts import PipelinedScript
from wsfleet.redis_urls import is_cluster_url


def _session_of(session: tuple[str, str]) -> str:
    return session[0]


class RedisReplayStore:
    """The replay store of real fleets: one Redis server or a Redis Cluster (``url``)."""

    def __init__(
        self,
        url: str,
        namespace: str = "wsfleet",
        max_messages: int = 1000,
        max_age_s: float = 300.0,
        max_bytes: int = 1 << 20,
    ) -> None:
        self._redis = connect(url, max_connections=16)
        self._ns = namespace
        # on a cluster, a create call takes one session (its keys' slot)
        self._slot_tag: Callable[[tuple[str, str]], str] | None = (
            _session_of if is_cluster_url(url) else None
        )
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_ms = max(1, int(max_age_s * 1000))

    def _session_key(self, session_id: str) -> str:
        return f"{self._ns}:sess:{{{session_id}}}"

    def _stream_key(self, session_id: str) -> str:
        return f"{self._ns}:replay:{{{session_id}}}"

    def _grants_key(self, session_id: str) -> str:
        return f"{self._ns}:grants:{{{session_id}}}"

    async def close(self) -> None:
        await self._redis.aclose()

    async def load(self, session_id: str) -> SessionState | None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._session_key(session_id))
                pipe.xrange(self._stream_key(session_id), count=1)
                pipe.smembers(self._grants_key(session_id))
                row, first, granted = await pipe.execute()
        except ERRORS as exc:
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
            granted=frozenset(channel.decode() for channel in granted),
        )

    async def update_grants(self, changes: Sequence[tuple[str, str, bool]]) -> None:
        """Record channels granted to sessions, or taken back: (session, channel, granted);
        one round trip. The set lives as long as the session's other keys."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id, channel, granted in changes:
                    key = self._grants_key(session_id)
                    if granted:
                        pipe.sadd(key, channel)
                    else:
                        pipe.srem(key, channel)
                    pipe.pexpire(key, self.max_age_ms)
                await pipe.execute()
        except ERRORS as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc

    async def create(self, sessions: Sequence[tuple[str, str]]) -> None:
        """Start new sessions, given as (session id, user id): one script call per
        :data:`CREATE_CHUNK` sessions (per session on a cluster), all in one pipeline."""
        calls = [
            (
                [self._session_key(session_id) for session_id, _ in chunk],
                [self.max_age_ms, *(user_id for _, user_id in chunk)],
            )
            for chunk in batches(sessions, CREATE_CHUNK, self._slot_tag)
        ]
        try:
            results = await _CREATE.run(self._redis, calls)
        except ERRORS as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc
        for result in results:
            if isinstance(result, Exception):
                raise ReplayStoreUnavailable(str(result))

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
        except ERRORS as exc:
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
        """Append entries and record client seqs: one script call per session, all of them
        in one pipeline (a batch costs Redis one command per session, not four per message).

        Returns the sessions whose entries were refused (superseded: the session lives on
        another pod now, which wrote past them); refused entries move no counter.
        Raises :class:`ReplayStoreUnavailable` if Redis cannot be reached.
        """
        by_session: dict[str, list[Entry]] = {}
        for entry in entries:
            by_session.setdefault(entry.session_id, []).append(entry)
        sessions = list(by_session.keys() | cseqs.keys())
        calls = []
        for session_id in sessions:
            mine = by_session.get(session_id, [])
            args: list[bytes | int | str] = [
                self.max_age_ms,
                self.max_messages,
                self.max_bytes,
                cseqs.get(session_id, 0),
            ]
            if mine:  # two arguments for all of them: each argument costs the pod to encode
                args.append(
                    "".join(f"{e.seq}:{int(e.binary)}:{e.message_id}:{len(e.data)}," for e in mine)
                )
                args.append(b"".join(entry.data for entry in mine))
            keys = (
                self._stream_key(session_id),
                self._session_key(session_id),
                self._grants_key(session_id),
            )
            calls.append((keys, args))
        try:
            results = await _PERSIST.run(self._redis, calls)
        except ERRORS as exc:
            raise ReplayStoreUnavailable(str(exc)) from exc
        refused = set()
        for session_id, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                raise ReplayStoreUnavailable(str(result))
            if result:
                refused.add(session_id)
        return refused


# KEYS: new sessions' hashes. ARGV: max age (ms), then each session's user id.
CREATE_LUA = """
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'user_id', ARGV[i + 1], 'last_seq', 0, 'last_cseq', 0)
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 0
"""
_CREATE = PipelinedScript(CREATE_LUA)
CREATE_CHUNK = 500  # sessions per script call: no call holds Redis for long

# KEYS: the session's stream, its hash, its grants. ARGV: max age (ms), max entries, max
# bytes, the client seq (0: none), then, if there are entries, their index and their data:
# the index is `<seq>:<binary flag>:<backend message id, 0: none>:<data length>,` per entry
# in seq order, the data all their data one after another. Each entry goes into the stream
# as `<seq>-1`.
#
# Entries are appended in order while each goes above every seq persisted (the hash's
# `last_seq`, and for XADD the stream's last id); the first that does not ends the batch,
# and the script returns 1 (refused): another pod owns the session now and wrote past it.
# So a pod's batch (its seqs increasing) is appended whole or not at all. The hash's numbers
# only grow: `last_seq` and `backend_last_id` rise to what was appended, `last_cseq` to a
# higher client seq. They are compared as decimal text (`above`): a backend message id is a
# uint64, more than a Lua number (a double) holds exactly. The window is trimmed oldest
# first to both bounds (the hash's `bytes` counts the data kept).
PERSIST_LUA = """
local function above(a, b)  -- decimal integers as text, no leading zeros: a > b
  if #a ~= #b then return #a > #b end
  return a > b
end
local function raise(field, value)  -- the hash's field to value, if that is higher
  if above(value, redis.call('HGET', KEYS[2], field) or '0') then
    redis.call('HSET', KEYS[2], field, value)
  end
end
local refused, added, added_bytes, top_id = 0, 0, 0, '0'
local top, at = '0', 1
if #ARGV > 4 then
  top = redis.call('HGET', KEYS[2], 'last_seq') or '0'
  for seq, binary, message_id, length in string.gmatch(ARGV[5], '(%d+):(%d):(%d+):(%d+),') do
    if not above(seq, top) then
      refused = 1
      break
    end
    local data = string.sub(ARGV[6], at, at + length - 1)
    at = at + length
    local id = redis.pcall('XADD', KEYS[1], seq .. '-1', 'd', data, 'b', binary, 'm', message_id)
    if type(id) == 'table' and id.err then  -- the stream is ahead of the hash
      refused = 1
      break
    end
    top, added, added_bytes = seq, added + 1, added_bytes + #data
    if above(message_id, top_id) then top_id = message_id end
  end
end
if added > 0 then
  local kept = redis.call('HINCRBY', KEYS[2], 'bytes', added_bytes)
  local count = redis.call('XLEN', KEYS[1])
  local max_count, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
  while count > 0 and (count > max_count or kept > max_bytes) do
    local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
    kept = kept - #oldest[2][2]
    redis.call('XDEL', KEYS[1], oldest[1])
    count = count - 1
  end
  redis.call('HSET', KEYS[2], 'bytes', kept, 'last_seq', top)
  raise('backend_last_id', top_id)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
raise('last_cseq', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return refused
"""
_PERSIST = PipelinedScript(PERSIST_LUA)
