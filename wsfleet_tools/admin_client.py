"""A small synchronous client of the control plane's admin API, for the CLI."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from wsfleet.admin_token import TOKEN_FILE
from wsfleet.errors import ConfigError, UnreachableError, WsfleetError
from wsfleet.readiness import read_ready
from wsfleet_tools.cli_options import add_state_dir_argument

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
FLEET_FILE = Path("run") / "fleet.json"  # `wsfleet up` writes where its fleet listens here


class AdminError(WsfleetError):
    """The admin API refused a call; the message is its answer, verbatim."""


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that calls the admin API takes: where, with which token, and
    ``--json``."""
    parser.add_argument(
        "--admin-url",
        help="control-plane admin (default: the fleet running from --state-dir, "
        "else http://127.0.0.1:8081)",
    )
    parser.add_argument("--admin-token", help="admin token (default: the state dir's admin.token)")
    add_state_dir_argument(parser, help="the fleet's state dir (default .wsfleet)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def fleet_file(state_dir: Path) -> Path:
    return state_dir / FLEET_FILE


def admin_url(url: str | None, state_dir: Path) -> str:
    """``--admin-url``, else the one the fleet running from ``state_dir`` recorded, else the
    default (``wsfleet up``'s default admin port)."""
    if url:
        return url
    facts = read_ready(fleet_file(state_dir))
    if facts is not None and isinstance(facts.get("admin_url"), str):
        return str(facts["admin_url"])
    return DEFAULT_ADMIN_URL


def admin_token(token: str | None, state_dir: Path) -> str:
    """``--admin-token``, else the state dir's token file."""
    if token:
        return token
    path = state_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise ConfigError(
            f"no --admin-token and no {path}: run `wsfleet up` first (or pass --state-dir)"
        ) from None


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise AdminError(f"{method} {path}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UnreachableError(
                f"cannot reach the control plane at {self._url}: {reason}"
            ) from None
