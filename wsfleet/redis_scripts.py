"""A Lua script called in a pipeline, once per item, and loaded again if Redis forgot it.

Redis keeps scripts in memory only: after a restart, a failover or ``SCRIPT FLUSH`` an
``EVALSHA`` answers NOSCRIPT. :meth:`PipelinedScript.run` then loads the script and sends
the same pipeline once more, so callers never see that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Call = tuple[Sequence[str], Sequence[Any]]  # (keys, args) of one EVALSHA


class PipelinedScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, redis: aioredis.Redis, calls: Sequence[Call]) -> list[object]:
        """One EVALSHA per call, all in one pipeline (one round trip); the results in order,
        an error as an exception object in its place. Raises what the connection raises."""
        results = await self._pipeline(redis, calls)
        if any(isinstance(result, NoScriptError) for result in results):
            await redis.script_load(self.source)
            results = await self._pipeline(redis, calls)
        return results

    async def _pipeline(self, redis: aioredis.Redis, calls: Sequence[Call]) -> list[object]:
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            return cast(list[object], await pipe.execute(raise_on_error=False))
