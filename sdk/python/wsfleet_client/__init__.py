"""Python client SDK for wsfleet (asyncio)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit


def connect_url(url: str, user_id: str) -> str:
    """``url`` with the ``user`` query parameter Envoy hashes on (sticky routing)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode({"user": user_id})) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/ws", query, parts.fragment))


__all__ = ["connect_url"]
