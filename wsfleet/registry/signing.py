"""Pod records that prove who wrote them, and per-pod admin credentials.

Redis is shared: whoever can write it could register a pod of their own, have Envoy
route users to it, and receive the control plane's calls (drains, disconnects). With a
fleet **registry key** (``registry.key`` in the state dir, ``--registry-key-file``)
every pod signs its record (HMAC-SHA256 over every field); readers that hold the key
ignore records that do not verify, and count them. The control plane calls a pod's
admin API with that pod's own token, derived from the key and the pod id: a pod never
sees a credential that works anywhere else (and never the operators' admin token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from wsfleet.registry.base import PodRecord
from wsfleet.secret_files import ensure_secret, read_secret

KEY_FILE = "registry.key"
SIGNATURE_FIELD = "sig"


class PodSigner:
    """Signs and verifies pod records, and derives per-pod admin tokens."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a registry key needs at least 32 bytes")
        self._key = key
        self.rejected = 0  # records read that did not verify

    def sign(self, pod: PodRecord) -> str:
        return hmac.new(self._key, _canonical(pod), hashlib.sha256).hexdigest()

    def verify(self, pod: PodRecord, signature: str) -> bool:
        """Whether ``signature`` is this key's for exactly this record (counted if not)."""
        if hmac.compare_digest(self.sign(pod), signature):
            return True
        self.rejected += 1
        return False

    def admin_token(self, pod_id: str) -> str:
        """The bearer token pod ``pod_id``'s admin API accepts from the control plane."""
        digest = hmac.new(self._key, b"admin-token\x1f" + pod_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def _canonical(pod: PodRecord) -> bytes:
    fields = pod.to_fields()
    return "\x1f".join(f"{name}={fields[name]}" for name in sorted(fields)).encode()


def ensure_registry_key(state_dir: Path) -> Path:
    """Create the state dir's registry key if it has none; return its path."""
    return ensure_secret(state_dir / KEY_FILE, lambda: secrets.token_hex(32))


def read_registry_key(path: Path | None) -> PodSigner | None:
    return None if path is None else PodSigner(read_secret(path, "registry key", 32).encode())
