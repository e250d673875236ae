"""Pod records that prove who wrote them, for which key and when; per-pod credentials.

Redis is shared: whoever can write it could register a pod of their own, have Envoy
route users to it, and receive the control plane's calls (drains, disconnects). So pod
records are signed, and a pod can sign only its own:

- the fleet's **root registry key** (``registry.key`` in the state dir, the control
  plane's ``--registry-key-file``) stays with the control plane and the operators' tools
  that start pods;
- a pod holds only its **pod key**, HMAC(root, ``pod-key:`` + pod id), in a file naming
  the pod (``wsfleet keygen --pod-key ID``; the launcher writes one per pod, Kubernetes an
  initContainer). It signs its record with it; its admin token is HMAC(pod key,
  ``admin``). The control plane derives both from the root; a pod can make neither for
  any other pod, so one compromised gateway cannot pass for another.

A signature covers every field of the record, the Redis key it is written under and when
it was signed. The control plane ignores (and counts) a record that does not verify with
the key of the pod its Redis key names (forged, or copied over another pod's), that was
signed more than :data:`RECORD_MAX_AGE_S` ago (a replayed capture: a dead pod kept in
EDS), or earlier than the last one it accepted under that key (a state rolled back: a
SERVING record written over a draining pod). Pods sign each write (every refresh), so
their records are never older than the refresh interval.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from wsfleet.errors import ConfigError
from wsfleet.registry.base import PodRecord
from wsfleet.secret_files import ensure_secret, read_secret, write_private

KEY_FILE = "registry.key"
SIGNATURE_FIELD = "sig"
SIGNED_AT_FIELD = "signed_at"
POD_KEY_HEADER = "wsfleet-pod-key"  # a pod key file: "wsfleet-pod-key <pod id> <hex key>"
# A record signed longer ago than this is a replay. Several TTLs (5 s by default; pods
# re-sign every refresh, 1.5 s), with room for the clocks of two hosts to disagree.
RECORD_MAX_AGE_S = 30.0
MIN_KEY_CHARS = 32


class ForeignPod(ValueError):
    """A pod key was asked to sign or speak for another pod."""


def derive_pod_key(root: bytes, pod_id: str) -> bytes:
    """Pod ``pod_id``'s key: only the root's holder can compute it for any pod."""
    return hmac.new(root, b"pod-key:" + pod_id.encode(), hashlib.sha256).digest()


def pod_admin_token(pod_key: bytes) -> str:
    """The bearer token a pod's admin API accepts from the control plane."""
    digest = hmac.new(pod_key, b"admin", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class PodSigner:
    """Signs and verifies pod records and derives pods' admin tokens.

    With the root key (``pod_id`` None: the control plane, the operators' tools) it acts
    for every pod; with a pod key (``pod_id`` given) for that pod alone, and anything
    else raises :class:`ForeignPod`. ``clock`` is wall time (records cross hosts)."""

    def __init__(
        self,
        key: bytes,
        pod_id: str | None = None,
        clock: Callable[[], float] = time.time,
        max_age_s: float = RECORD_MAX_AGE_S,
    ) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"a registry key needs at least {MIN_KEY_CHARS} bytes")
        self._key = key
        self.pod_id = pod_id
        self._clock = clock
        self._max_age_s = max_age_s
        self._last_accepted: dict[str, float] = {}  # Redis key -> newest signed_at accepted
        self._pruned_at_size = 0
        self.rejected = 0  # records read that did not verify (or were stale or rolled back)

    @property
    def is_root(self) -> bool:
        return self.pod_id is None

    def pod_key(self, pod_id: str) -> bytes:
        """``pod_id``'s key (:class:`ForeignPod` if this signer holds another pod's)."""
        if self.pod_id is None:
            return derive_pod_key(self._key, pod_id)
        if pod_id != self.pod_id:
            raise ForeignPod(f"this is pod {self.pod_id!r}'s key, not {pod_id!r}'s")
        return self._key

    def admin_token(self, pod_id: str) -> str:
        """The bearer token pod ``pod_id``'s admin API accepts from the control plane."""
        return pod_admin_token(self.pod_key(pod_id))

    def pod_key_text(self, pod_id: str) -> str:
        """The contents of ``pod_id``'s pod key file (see :func:`read_pod_key`)."""
        if not pod_id or any(c.isspace() for c in pod_id):
            raise ValueError(f"a pod id has no spaces and is not empty: {pod_id!r}")
        return f"{POD_KEY_HEADER} {pod_id} {self.pod_key(pod_id).hex()}\n"

    def signature_fields(self, pod: PodRecord, redis_key: str) -> dict[str, str]:
        """The fields to store beside ``pod``'s under ``redis_key``: when, and the MAC."""
        signed_at = f"{self._clock():.6f}"
        return {
            SIGNED_AT_FIELD: signed_at,
            SIGNATURE_FIELD: _mac(self.pod_key(pod.pod_id), pod, redis_key, signed_at),
        }

    def verify(
        self, pod: PodRecord, redis_key: str, pod_id: str, stored: Mapping[str, str]
    ) -> bool:
        """Whether ``pod``, read under ``redis_key`` (pod ``pod_id``'s) with the stored
        fields ``stored``, was signed by ``pod_id`` for that key, lately, and no earlier
        than the last record accepted under that key. Counted when not."""
        if self._verified(pod, redis_key, pod_id, stored):
            return True
        self.rejected += 1
        return False

    def _verified(
        self, pod: PodRecord, redis_key: str, pod_id: str, stored: Mapping[str, str]
    ) -> bool:
        if pod.pod_id != pod_id:
            return False  # a record copied under another pod's key
        signed_at_text = stored.get(SIGNED_AT_FIELD, "")
        try:
            signed_at = float(signed_at_text)
            key = self.pod_key(pod_id)
        except (ValueError, ForeignPod):
            return False
        expected = _mac(key, pod, redis_key, signed_at_text)
        if not hmac.compare_digest(expected, stored.get(SIGNATURE_FIELD, "")):
            return False
        now = self._clock()
        if not math.isfinite(signed_at) or abs(now - signed_at) > self._max_age_s:
            return False  # a replay (or clocks far apart)
        if signed_at < self._last_accepted.get(redis_key, -math.inf):
            return False  # an older record written over a newer one
        self._last_accepted[redis_key] = signed_at
        self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Forget keys last accepted beyond the age bound (their old records are refused
        by age anyway): the memory follows the live pods, not every pod ever seen."""
        if len(self._last_accepted) <= 2 * self._pruned_at_size + 64:
            return
        horizon = now - self._max_age_s
        self._last_accepted = {k: t for k, t in self._last_accepted.items() if t >= horizon}
        self._pruned_at_size = len(self._last_accepted)


def _mac(key: bytes, pod: PodRecord, redis_key: str, signed_at: str) -> str:
    fields = pod.to_fields()
    parts = [f"{name}={fields[name]}" for name in sorted(fields)]
    parts += [f"\x1ekey={redis_key}", f"{SIGNED_AT_FIELD}={signed_at}"]
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def ensure_registry_key(state_dir: Path) -> Path:
    """Create the state dir's root registry key if it has none; return its path."""
    return ensure_secret(state_dir / KEY_FILE, lambda: secrets.token_hex(32))


def read_registry_key(path: Path | None) -> PodSigner | None:
    """The signer of the key in ``path``: the root key (acts for every pod) or a pod key
    file (for its pod alone)."""
    if path is None:
        return None
    text = read_secret(path, "registry key", MIN_KEY_CHARS)
    if text.startswith(POD_KEY_HEADER + " "):
        return _parse_pod_key(path, text)
    return PodSigner(text.encode())


def read_pod_key(path: Path | None, pod_id: str) -> PodSigner | None:
    """The pod key in ``path``, which must be ``pod_id``'s: a pod is never handed the root
    key, nor another pod's (:class:`ConfigError` saying so)."""
    if path is None:
        return None
    text = read_secret(path, "pod key", MIN_KEY_CHARS)
    if not text.startswith(POD_KEY_HEADER + " "):
        raise ConfigError(
            f"{path} is not a pod key: a pod holds only its own key, never the fleet's "
            f"registry key (make it with: wsfleet keygen --pod-key {pod_id} --out FILE)"
        )
    signer = _parse_pod_key(path, text)
    if signer.pod_id != pod_id:
        raise ConfigError(f"{path} is pod {signer.pod_id!r}'s key, and this pod is {pod_id!r}")
    return signer


def _parse_pod_key(path: Path, text: str) -> PodSigner:
    parts = text.split()
    try:
        _, pod_id, key_hex = parts
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ConfigError(f"{path}: a pod key file is '{POD_KEY_HEADER} POD_ID HEX'") from None
    return PodSigner(key, pod_id=pod_id)


def write_pod_key(root: PodSigner, pod_id: str, path: Path) -> Path:
    """Write ``pod_id``'s key file (mode 0600, replacing an older one); return its path."""
    write_private(path, root.pod_key_text(pod_id).encode(), replace=True)
    return path
