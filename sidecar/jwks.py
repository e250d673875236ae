"""Keeps a :class:`~sidecar.auth.TokenVerifier`'s keys current from a JWKS file or URL.

Re-read every ``refresh_s``, and sooner (at most every ``min_refresh_s``)
after a token named a key we do not have: that is how a rotation shows up.
A JWKS that cannot be read or parsed keeps the current keys and is logged.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import structlog

from sidecar.auth import KeySet, TokenVerifier

log = structlog.get_logger()


async def read_jwks(source: str) -> dict[str, object]:
    """A JWKS document from a file path or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(source) as response,
        ):
            response.raise_for_status()
            document = await response.json(content_type=None)
    else:
        document = json.loads(Path(source).read_text())
    if not isinstance(document, dict):
        raise ValueError("a JWKS is a JSON object with a 'keys' list")
    return document


async def load_keys(source: str, secret: bytes | None) -> KeySet:
    return KeySet.from_jwks(await read_jwks(source), secret)


class JwksRefresher:
    """Re-reads the JWKS on a schedule and on unknown kids."""

    def __init__(
        self,
        verifier: TokenVerifier,
        source: str,
        refresh_s: float = 60.0,
        min_refresh_s: float = 2.0,
    ) -> None:
        self._verifier = verifier
        self._source = source
        self._refresh_s = refresh_s
        self._min_refresh_s = min_refresh_s

    async def refresh(self) -> bool:
        try:
            keys = await load_keys(self._source, self._verifier.keys.secret)
        except (OSError, ValueError, aiohttp.ClientError) as exc:
            log.warning("jwks_refresh_failed", source=self._source, error=str(exc))
            return False
        if set(keys.by_kid) != set(self._verifier.keys.by_kid):
            log.info("jwks_keys_changed", kids=sorted(keys.by_kid))
        self._verifier.keys = keys
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        seen_unknown = self._verifier.unknown_kids
        while True:
            await asyncio.sleep(self._min_refresh_s)
            now = loop.time()
            rotated = self._verifier.unknown_kids != seen_unknown
            if rotated or now - last >= self._refresh_s:
                seen_unknown = self._verifier.unknown_kids
                last = now
                await self.refresh()
