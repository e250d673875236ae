"""Policy bundles: certificates checked with the policy; watched files; dry-run diffs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.certs import write_self_signed
from tests.policies import websocket_policy
from xds_server.metrics import XdsMetrics
from xds_server.policy_diff import diff_versions, render, resource_versions
from xds_server.policy_loader import PolicyBundle, PolicyError, default_policy_text, load_bundle
from xds_server.policy_watcher import PolicyWatcher

TLS_POLICY = websocket_policy(8443, tls=True)


@pytest.fixture
def tls_policy(tmp_path: Path) -> Path:
    write_self_signed(tmp_path / "edge.crt", tmp_path / "edge.key")
    path = tmp_path / "policy.yaml"
    path.write_text(TLS_POLICY)
    return path


def test_a_bundle_carries_its_checked_certificates(tls_policy: Path) -> None:
    bundle = load_bundle(tls_policy)
    cert = bundle.certificates["edge"]
    assert cert.subject == "CN=localhost"
    assert 29 * 86400 < cert.seconds_to_expiry() <= 30 * 86400


def test_a_key_that_does_not_match_its_certificate_is_refused(tls_policy: Path) -> None:
    write_self_signed(tls_policy.parent / "other.crt", tls_policy.parent / "other.key")
    tls_policy.write_text(TLS_POLICY.replace("key_file: edge.key", "key_file: other.key"))
    with pytest.raises(
        PolicyError, match=r"policy.yaml:2: certificates.0: .*other.key: key does not match"
    ):
        load_bundle(tls_policy)


def test_a_certificate_that_does_not_parse_is_refused(tls_policy: Path) -> None:
    (tls_policy.parent / "edge.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(PolicyError, match=r"edge\.crt: not a PEM certificate chain"):
        load_bundle(tls_policy)


def test_a_tls_listener_must_name_a_known_certificate(tls_policy: Path) -> None:
    tls_policy.write_text(
        TLS_POLICY.replace("tls: {certificate: edge}", "tls: {certificate: nope}")
    )
    with pytest.raises(
        PolicyError, match=r":8: listeners.0.tls.certificate: unknown certificate 'nope'"
    ):
        load_bundle(tls_policy)


def test_the_watcher_applies_valid_edits_and_keeps_the_last_good_on_invalid(
    tls_policy: Path,
) -> None:
    applied: list[PolicyBundle] = []
    metrics = XdsMetrics()
    watcher = PolicyWatcher(tls_policy, applied.append, metrics)
    assert watcher.check() is False  # nothing changed yet
    tls_policy.write_text(TLS_POLICY.replace("port: 8443", "port: 9443"))
    assert watcher.check() is True
    assert applied[-1].policy.listeners[0].port == 9443
    tls_policy.write_text(TLS_POLICY.replace("pool: gateways", "pool: nope"))
    assert watcher.check() is False
    assert len(applied) == 1
    assert watcher.last_error is not None and "unknown pool 'nope'" in watcher.last_error
    rejected = metrics.policy_reloads.labels("rejected")._value.get()
    assert rejected == 1


def test_the_watcher_reloads_when_a_certificate_file_changes(tls_policy: Path) -> None:
    applied: list[PolicyBundle] = []
    watcher = PolicyWatcher(tls_policy, applied.append, XdsMetrics())
    before = load_bundle(tls_policy).certificates["edge"].chain_pem
    write_self_signed(tls_policy.parent / "edge.crt", tls_policy.parent / "edge.key")
    assert watcher.check() is True
    assert applied[-1].certificates["edge"].chain_pem != before


def test_the_diff_flags_listener_changes_as_draining(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(default_policy_text())
    new.write_text(default_policy_text().replace("path_prefix: /ws", "path_prefix: /socket"))
    routes_only = diff_versions(
        resource_versions(load_bundle(old), {}), resource_versions(load_bundle(new), {})
    )
    assert [(c.type, c.name, c.change) for c in routes_only] == [("rds", "public", "changed")]
    assert "no listener is touched" in render(routes_only)
    new.write_text(default_policy_text().replace("port: 8080", "port: 9090"))
    listener = diff_versions(
        resource_versions(load_bundle(old), {}), resource_versions(load_bundle(new), {})
    )
    assert [(c.type, c.change, c.drains_connections) for c in listener] == [
        ("lds", "changed", True)
    ]
    assert "would drain its live connections" in render(listener)
    assert render([]) == "no change: Envoy would receive nothing"


@pytest.mark.parametrize(
    ("target", "problem"),
    [("/dev/zero", "not a regular file"), (".", "not a regular file"), ("big.key", "larger than")],
)
def test_a_certificate_path_must_be_a_regular_file_of_a_sane_size(
    tls_policy: Path, target: str, problem: str
) -> None:
    (tls_policy.parent / "big.key").write_bytes(b"k" * (300 * 1024))
    tls_policy.write_text(TLS_POLICY.replace("key_file: edge.key", f"key_file: {target}"))
    with pytest.raises(PolicyError, match=rf"certificates.0: .*{problem}"):
        load_bundle(tls_policy)


def test_a_policy_file_larger_than_the_cap_is_refused_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    from xds_server.policy_loader import MAX_POLICY_BYTES

    path = tmp_path / "policy.yaml"
    path.write_text(default_policy_text() + "#" * MAX_POLICY_BYTES)
    with pytest.raises(PolicyError, match=r"policy.yaml: policy file: larger than"):
        load_bundle(path)


async def test_the_watcher_reads_and_parses_off_the_event_loop(tls_policy: Path) -> None:
    import asyncio
    import threading

    applied: list[PolicyBundle] = []
    arrived = asyncio.Event()

    def apply(bundle: PolicyBundle) -> None:
        applied.append(bundle)
        arrived.set()

    watcher = PolicyWatcher(tls_policy, apply, XdsMetrics(), poll_s=0.01)
    loaders: list[threading.Thread] = []
    changed = watcher._changed_bundle

    def spy() -> object:
        loaders.append(threading.current_thread())
        return changed()

    watcher._changed_bundle = spy  # type: ignore[method-assign]
    tls_policy.write_text(TLS_POLICY.replace("port: 8443", "port: 8444"))
    task = asyncio.ensure_future(watcher.run())
    try:
        async with asyncio.timeout(30):
            await arrived.wait()
    finally:
        task.cancel()
    assert applied[0].policy.listeners[0].port == 8444
    assert loaders and all(t is not threading.main_thread() for t in loaders)
