"""Per-pod credentials: a pod's key signs only its own record and yields only its own admin
token; the control plane, holding the root key, verifies each record with the key of the
pod its Redis key names, and refuses replays (stale), copies (another key) and rollbacks
(older than a record already accepted)."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import pytest

from wsfleet.errors import ConfigError
from wsfleet.registry import PodRecord, PodState
from wsfleet.registry.signing import (
    RECORD_MAX_AGE_S,
    ForeignPod,
    PodSigner,
    read_pod_key,
    read_registry_key,
    write_pod_key,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _root(clock: Clock) -> PodSigner:
    return PodSigner(secrets.token_hex(32).encode(), clock=clock)


def _pod_signer(root: PodSigner, pod_id: str, clock: Clock) -> PodSigner:
    return PodSigner(root.pod_key(pod_id), pod_id=pod_id, clock=clock)


def _pod(pod_id: str, state: PodState = PodState.SERVING, host: str = "10.0.0.1") -> PodRecord:
    return PodRecord(pod_id, "gateways", host, 9000, 9100, state=state, started_at=1.0)


def _key(pod_id: str) -> str:
    return f"wsfleet:pod:{pod_id}"


def _stored(signer: PodSigner, pod: PodRecord, redis_key: str) -> dict[str, str]:
    return {**pod.to_fields(), **signer.signature_fields(pod, redis_key)}


def test_a_pods_own_record_verifies_and_every_field_is_covered() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    pod = _pod("a")
    stored = _stored(a, pod, _key("a"))
    assert root.verify(pod, _key("a"), "a", stored)
    for change in ({"host": "10.6.6.6"}, {"admin_port": 1}, {"state": PodState.DRAINING}):
        changed = dataclasses.replace(pod, **change)
        assert not root.verify(changed, _key("a"), "a", stored)
    assert not _root(clock).verify(pod, _key("a"), "a", stored)  # another fleet's root
    assert root.rejected == 3


def test_a_pod_cannot_make_a_record_for_another_pod_that_the_control_plane_accepts() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    with pytest.raises(ForeignPod):
        a.signature_fields(_pod("b"), _key("b"))
    # the attacker uses its own key bytes anyway, claiming to be b
    posing = PodSigner(root.pod_key("a"), pod_id="b", clock=clock)
    forged = _pod("b", host="10.6.6.6")
    assert not root.verify(forged, _key("b"), "b", _stored(posing, forged, _key("b")))
    assert root.rejected == 1


def test_each_pod_derives_only_its_own_admin_token() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    assert a.admin_token("a") == root.admin_token("a")  # what the control plane sends it
    assert root.admin_token("a") != root.admin_token("b")
    with pytest.raises(ForeignPod):
        a.admin_token("b")
    assert _root(clock).admin_token("a") != root.admin_token("a")
    assert root.pod_key("a") not in (root.admin_token("a").encode(), root.pod_key("b"))


def test_a_replayed_record_is_ignored_once_stale() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    pod = _pod("a")
    captured = _stored(a, pod, _key("a"))
    clock.now += RECORD_MAX_AGE_S / 2
    fresh_reader = _root_like(root, clock)
    assert fresh_reader.verify(pod, _key("a"), "a", captured)  # still within the bound
    clock.now += RECORD_MAX_AGE_S  # the pod died long ago; someone writes its record back
    assert not _root_like(root, clock).verify(pod, _key("a"), "a", captured)


def _root_like(root: PodSigner, clock: Clock) -> PodSigner:
    """Another reader with the same root key (a control plane that just started)."""
    return PodSigner(root._key, clock=clock)


def test_a_record_copied_under_another_pods_key_is_ignored() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    pod = _pod("a")
    stored = _stored(a, pod, _key("a"))
    assert not root.verify(pod, _key("b"), "b", stored)  # under b's key
    assert not root.verify(pod, "other-fleet:pod:a", "a", stored)  # another namespace
    assert root.verify(pod, _key("a"), "a", stored)


def test_a_state_cannot_be_rolled_back_by_replaying_an_older_record() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", clock)
    serving = _stored(a, _pod("a"), _key("a"))
    clock.now += 1.5
    draining_pod = _pod("a", PodState.DRAINING)
    draining = _stored(a, draining_pod, _key("a"))
    assert root.verify(draining_pod, _key("a"), "a", draining)
    assert root.verify(draining_pod, _key("a"), "a", draining)  # the same record, read again
    assert not root.verify(_pod("a"), _key("a"), "a", serving)  # SERVING written back over it


def test_a_record_from_the_future_beyond_the_bound_is_ignored() -> None:
    clock = Clock()
    root = _root(clock)
    a = _pod_signer(root, "a", Clock(clock.now + 2 * RECORD_MAX_AGE_S))
    pod = _pod("a")
    assert not root.verify(pod, _key("a"), "a", _stored(a, pod, _key("a")))


def test_the_control_plane_forgets_pods_long_gone() -> None:
    clock = Clock()
    root = _root(clock)

    def accept(pod_id: str) -> None:
        pod = _pod(pod_id)
        assert root.verify(pod, _key(pod_id), pod_id, _stored(root, pod, _key(pod_id)))

    for index in range(300):
        accept(f"gone-{index}")
    clock.now += 2 * RECORD_MAX_AGE_S
    for index in range(300):
        accept(f"live-{index}")
    assert not [key for key in root._last_accepted if "gone-" in key]


def test_a_pod_key_file_names_its_pod_and_a_pod_refuses_any_other_key(tmp_path: Path) -> None:
    clock = Clock()
    root = _root(clock)
    root_file = tmp_path / "registry.key"
    root_file.write_text(root._key.decode())
    path = write_pod_key(root, "a", tmp_path / "a.key")
    assert path.stat().st_mode & 0o777 == 0o600
    signer = read_pod_key(path, "a")
    assert signer is not None and signer.pod_id == "a"
    assert signer.admin_token("a") == root.admin_token("a")
    with pytest.raises(ConfigError, match="is pod 'a'"):
        read_pod_key(path, "b")
    with pytest.raises(ConfigError, match="not a pod key"):
        read_pod_key(root_file, "a")
    as_read = read_registry_key(path)  # what a process reading either kind gets
    assert as_read is not None and not as_read.is_root and as_read.pod_id == "a"
    assert root_file.read_text() not in path.read_text()
