"""The fleet CA: who each certificate says its holder is, and when it is issued again."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml
from cryptography import x509

from wsfleet import fleet_ca
from wsfleet_tools.launcher.envoy_bootstrap import BootstrapParams, XdsTls, render_bootstrap


def test_a_node_certificate_names_its_node_and_region_and_is_signed_by_the_ca(
    tmp_path: Path,
) -> None:
    pair = fleet_ca.ensure_node_pair(tmp_path, "envoy-7", "eu-west")
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(fleet_ca.ca_file(tmp_path).read_bytes())
    cert.verify_directly_issued_by(ca)
    assert fleet_ca.node_identity(pair.cert.read_bytes()) == fleet_ca.NodeIdentity(
        "envoy-7", "eu-west"
    )
    assert pair.key.stat().st_mode & 0o077 == 0  # the key is the holder's alone


def test_the_server_certificate_answers_to_every_name_it_is_reached_by(tmp_path: Path) -> None:
    pair = fleet_ca.ensure_server_pair(tmp_path)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"xds-server", "localhost"}
    assert fleet_ca.node_identity(pair.cert.read_bytes()) is None  # it is no node


def test_certificates_are_kept_until_they_near_expiry_then_issued_again(tmp_path: Path) -> None:
    first = fleet_ca.ensure_node_pair(tmp_path, "envoy-1", "local").cert.read_bytes()
    assert fleet_ca.ensure_node_pair(tmp_path, "envoy-1", "local").cert.read_bytes() == first
    moved = fleet_ca.ensure_node_pair(tmp_path, "envoy-1", "elsewhere").cert.read_bytes()
    assert moved != first  # another region: another certificate
    real_now = fleet_ca._now
    try:
        fleet_ca._now = lambda: real_now() + datetime.timedelta(days=340)  # type: ignore[assignment]
        renewed = fleet_ca.ensure_node_pair(tmp_path, "envoy-1", "elsewhere").cert.read_bytes()
    finally:
        fleet_ca._now = real_now  # type: ignore[assignment]
    assert renewed != moved


def test_the_bootstrap_carries_the_xds_tls_only_when_asked(tmp_path: Path) -> None:
    plain = yaml.safe_load(render_bootstrap(BootstrapParams(node_id="e", xds_port=1)))
    [cluster] = plain["static_resources"]["clusters"]
    assert "transport_socket" not in cluster
    tls = XdsTls(tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "ca.crt")
    secured = yaml.safe_load(
        render_bootstrap(BootstrapParams(node_id="e", xds_port=1, xds_tls=tls))
    )
    [cluster] = secured["static_resources"]["clusters"]
    context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["tls_certificates"][0]["private_key"] == {"filename": str(tls.key)}
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "xds-server"}}
    ]
