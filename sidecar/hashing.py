"""Consistent choice of a backend for a routing key (rendezvous hashing).

Each key goes to the backend with the highest hash of (backend, key): adding or
removing one of N backends moves only the keys that backend wins or won (~1/N).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _score(backend: str, key: str) -> int:
    digest = hashlib.blake2b(f"{backend}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_backend(key: str, backends: Sequence[str]) -> str | None:
    """The backend that owns ``key``, or None when there are none."""
    if not backends:
        return None
    if len(backends) == 1:  # the only one owns every key (no hash to compute)
        return backends[0]
    return max(backends, key=lambda backend: _score(backend, key))
