"""Keeps a :class:`~sidecar.auth.TokenVerifier`'s keys current from a JWKS file or URL.

Re-read every ``refresh_s``, and sooner (at most every ``min_refresh_s``)
after a token named a key we do not have: that is how a rotation shows up.
A JWKS that cannot be read or parsed keeps the current keys and is logged.

The keys decide who is trusted, so where they come from is checked: a URL is
``https://`` (plain ``http://`` only to this host's loopback, where nobody on the
network can change it), a redirect is not followed (it could lead anywhere, ``http://``
too), and an answer is read within :data:`JWKS_TIMEOUT_S` and at most
:data:`MAX_JWKS_BYTES`, counted as it arrives: a huge or endless body is refused, not held.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import structlog

from sidecar.auth import KeySet, TokenVerifier

log = structlog.get_logger()

MAX_JWKS_BYTES = 1 << 20  # a JWKS is a few KiB: a thousand keys still fit
JWKS_TIMEOUT_S = 5.0  # connect, send, read the whole answer
_READ_CHUNK_BYTES = 64 << 10
LOOPBACK_NAMES = ("localhost",)


def checked_jwks_url(url: str) -> str:
    """``url`` if keys may be fetched from it, else ValueError saying why: ``https://``,
    or ``http://`` to a loopback address (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return url
    if scheme == "http" and _is_loopback(parts.hostname or ""):
        return url
    raise ValueError(
        "a JWKS URL must be https:// (http:// is allowed only to a loopback address: "
        "127.0.0.0/8, ::1 or localhost), else anyone on the path could swap the keys"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_url(source: str) -> bool:
    """A JWKS source with a ``scheme://`` is a URL (checked by :func:`checked_jwks_url`);
    anything else is a file path."""
    return "://" in source


async def read_bounded(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The bytes of ``chunks``, or ValueError as soon as they pass ``limit``: what is
    read is never more than ``limit`` plus one chunk."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ValueError(f"the JWKS is larger than {limit} bytes")
    return bytes(body)


async def fetch_jwks(url: str) -> bytes:
    """The body at ``url`` (checked by :func:`checked_jwks_url`), bounded in time and size."""
    checked_jwks_url(url)
    timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        if 300 <= response.status < 400:
            raise ValueError(
                f"the JWKS URL redirects (HTTP {response.status}): give the URL it redirects to"
            )
        response.raise_for_status()
        if (response.content_length or 0) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return await read_bounded(response.content.iter_chunked(_READ_CHUNK_BYTES), MAX_JWKS_BYTES)


def _read_file(path: Path) -> bytes:
    with path.open("rb") as file:
        body = file.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    return body


async def read_jwks(source: str) -> dict[str, object]:
    """A JWKS document from a file path or an https (or loopback http) URL."""
    body = await fetch_jwks(source) if is_url(source) else _read_file(Path(source))
    document = json.loads(body)
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
