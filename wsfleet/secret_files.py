"""Secrets kept in files of the state dir: created once, readable by their owner only
(mode 0600), refused with a clear message when unreadable or too short."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from wsfleet.errors import ConfigError


def write_private(path: Path, data: bytes, replace: bool = False) -> None:
    """Write ``data`` to a file only its owner can read (never over an existing one unless
    ``replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    with os.fdopen(os.open(path, flags, 0o600), "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a replaced file keeps no wider mode
        handle.write(data)


def ensure_secret(path: Path, make: Callable[[], str]) -> Path:
    """Create the secret file with ``make()`` if it does not exist; return its path."""
    if not path.exists():
        write_private(path, make().encode())
    return path


def read_secret(path: Path, what: str, min_chars: int) -> str:
    """The file's secret (stripped); :class:`ConfigError` naming ``what`` otherwise."""
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(secret) < min_chars:
        raise ConfigError(f"{what} {path} is too short (need at least {min_chars} characters)")
    return secret
