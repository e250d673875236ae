"""The admin token's file (``<state dir>/admin.token`` for the local fleet): made once,
read by the admin APIs (:mod:`wsfleet.admin_auth`) and by the commands that call them.
Nothing here imports the HTTP stack, so a command line that only reads it stays light."""

from __future__ import annotations

import secrets
from pathlib import Path

from wsfleet.secret_files import ensure_secret, read_secret

TOKEN_FILE = "admin.token"


def ensure_admin_token(state_dir: Path) -> Path:
    return ensure_secret(state_dir / TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def read_admin_token(path: Path | None) -> str | None:
    return None if path is None else read_secret(path, "admin token", 16)
