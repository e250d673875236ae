"""API keys: who may call the server API, and what for.

The keys file holds no key, only its SHA-256 and what it may do (a leaked file opens
nothing)::

    keys:
      - name: local                 # shown in logs and metrics, never the key
        sha256: 9f86d081884c7d65…   # of the key (wsfleet apikey create prints the key once)
        scopes: ["*"]               # or some of: publish, send, subscribe, disconnect,
                                    # presence, history

A request carries its key as ``Authorization: Bearer <key>``. The file is read at start
(a bad file stops the server with the file, entry and problem named) and again when it
changes (a bad edit is logged and the keys in force stay).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from wsfleet.bounded_files import UnreadableFile, read_bounded
from wsfleet.errors import ConfigError
from wsfleet.secret_files import write_private

SCOPES = ("publish", "send", "subscribe", "disconnect", "presence", "history")
ALL = "*"
MAX_KEYS_FILE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    sha256: bytes
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def new_key() -> str:
    """A fresh API key (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_entry(name: str, key: str, scopes: list[str]) -> dict[str, object]:
    """The keys file's entry for ``key`` (what ``wsfleet apikey create`` appends)."""
    return {"name": name, "sha256": key_digest(key), "scopes": scopes}


def parse_keys(text: str, source: str) -> dict[bytes, ApiKey]:
    """The keys of a keys file, by digest; :class:`ConfigError` naming what is wrong."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not YAML: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{source}: the file is {{"keys": [...]}} (a list of keys)')
    keys: dict[bytes, ApiKey] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: keys.{index}"
        if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "scopes"}:
            raise ConfigError(f"{where}: an entry has name, sha256 and scopes, nothing else")
        name, digest, scopes = entry.get("name"), entry.get("sha256"), entry.get("scopes")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{where}.name: a name of its own, not empty")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ConfigError(f"{where}.sha256: the key's SHA-256 in 64 hex digits, quoted")
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raise ConfigError(f"{where}.sha256: the key's SHA-256 in 64 hex digits") from None
        if not isinstance(scopes, list) or not scopes:
            raise ConfigError(f'{where}.scopes: a list of scopes ({", ".join(SCOPES)}) or ["*"]')
        unknown = [s for s in scopes if s != ALL and s not in SCOPES]
        if unknown:
            raise ConfigError(f"{where}.scopes: unknown scope {unknown[0]!r} ({', '.join(SCOPES)})")
        names.add(name)
        keys[raw] = ApiKey(name, raw, frozenset(SCOPES if ALL in scopes else scopes))
    return keys


class ApiKeys:
    """The keys in force, read from a file and read again when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._keys: dict[bytes, ApiKey] = {}
        self.reload()

    def reload(self) -> bool:
        """Read the file if it changed; raises :class:`ConfigError` on a bad file. Whether
        the keys changed."""
        try:
            stat = self._path.stat()
        except OSError as exc:
            raise ConfigError(
                f"{self._path}: cannot read the API keys file: {exc.strerror}"
            ) from None
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return False
        try:
            text = read_bounded(self._path, MAX_KEYS_FILE_BYTES).decode("utf-8")
        except (UnreadableFile, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self._path}: {exc}") from None
        self._keys = parse_keys(text, str(self._path))
        self._stamp = stamp
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, authorization: str) -> ApiKey | None:
        """The key an ``Authorization: Bearer <key>`` header names, if it is known."""
        if authorization[:7].lower() != "bearer ":
            return None
        # looked up by the offered key's digest: what timing could tell is about a hash
        return self._keys.get(hashlib.sha256(authorization[7:].strip().encode()).digest())


LOCAL_KEY_FILE = "api.key"  # the local fleet's own key, for the CLI (wsfleet publish ...)
KEYS_FILE = "api-keys.yaml"


def keys_file(state_dir: Path) -> Path:
    return state_dir / KEYS_FILE


def add_key(path: Path, name: str, scopes: list[str]) -> str:
    """A new key named ``name`` with ``scopes``, added to the keys file at ``path`` (made if
    missing); returns the key, which is kept nowhere else."""
    entries: list[object] = []
    if path.exists():
        text = read_bounded(path, MAX_KEYS_FILE_BYTES).decode("utf-8")
        parse_keys(text, str(path))  # a broken file is not added to
        entries = list((yaml.safe_load(text) or {}).get("keys", []))
    if any(isinstance(e, dict) and e.get("name") == name for e in entries):
        raise ConfigError(f"{path}: a key named {name!r} exists already")
    unknown = [s for s in scopes if s != ALL and s not in SCOPES]
    if unknown or not scopes:
        raise ConfigError(f"scopes are some of {', '.join(SCOPES)}, or *")
    key = new_key()
    entries.append(key_entry(name, key, scopes))
    body = yaml.safe_dump({"keys": entries}, sort_keys=False).encode()
    write_private(path, body, replace=True)
    return key


def ensure_local_key(state_dir: Path) -> tuple[Path, Path]:
    """The local fleet's API key (all scopes) and the keys file that admits it, made once:
    ``(key file, keys file)``."""
    key_path, keys_path = state_dir / LOCAL_KEY_FILE, keys_file(state_dir)
    if not key_path.exists() or not keys_path.exists():
        keys_path.unlink(missing_ok=True)
        key = add_key(keys_path, "local", [ALL])
        write_private(key_path, key.encode(), replace=True)
    return key_path, keys_path
