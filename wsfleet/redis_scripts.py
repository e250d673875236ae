"""A Lua script called in a pipeline, once per item, and loaded again if Redis forgot it.

Redis keeps scripts in memory only: after a restart, a failover or ``SCRIPT FLUSH`` an
``EVALSHA`` answers NOSCRIPT. :meth:`PipelinedScript.run` then loads the script and sends
the same pipeline once more, so callers never see that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.exceptions import NoScriptError

from wsfleet.redis_client import AnyRedis

Call = tuple[Sequence[str], Sequence[Any]]  # (keys, args) of one EVALSHA
Extra = Callable[[Any], None]  # adds plain commands to the same pipeline


class PipelinedScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(
        self, redis: AnyRedis, calls: Sequence[Call], extra: Extra | None = None
    ) -> list[object]:
        """One EVALSHA per call, all in one pipeline (one round trip per node), followed
        by the plain commands ``extra`` adds (idempotent ones: they may be sent twice).
        The calls' results in order, an error as an exception object in its place; an
        error of an extra command is raised, as is what the connection raises."""
        results = await self._pipeline(redis, calls, extra)
        if any(isinstance(result, NoScriptError) for result in results):
            await redis.script_load(self.source)  # on every master of a cluster
            results = await self._pipeline(redis, calls, extra)
        for result in results[len(calls) :]:
            if isinstance(result, Exception):
                raise result
        return results[: len(calls)]

    async def _pipeline(
        self, redis: AnyRedis, calls: Sequence[Call], extra: Extra | None
    ) -> list[object]:
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            if extra is not None:
                extra(pipe)
            return cast(list[object], await pipe.execute(raise_on_error=False))
