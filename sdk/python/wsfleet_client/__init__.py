"""Python client SDK for wsfleet (asyncio).

- :class:`~wsfleet_client.client.Client`: connects with a token, reconnects with
  backoff (full jitter, server retry hints), watches heartbeats, and yields messages.
- :class:`~wsfleet_client.backoff.Backoff`: the delay policy on its own.
- :class:`Subscription`, :class:`Publication`, :class:`ChannelError`: channels
  (``client.subscribe(channel)``), see :mod:`wsfleet_client.channels`.
- :func:`connect_url`: the URL with the ``user`` parameter Envoy hashes on.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from wsfleet_client.backoff import Backoff
from wsfleet_client.channels import ChannelError, Publication, Subscription


def connect_url(url: str, user_id: str) -> str:
    """``url`` with the ``user`` query parameter Envoy hashes on (sticky routing)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode({"user": user_id})) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/ws", query, parts.fragment))


__all__ = ["Backoff", "ChannelError", "Publication", "Subscription", "connect_url"]
