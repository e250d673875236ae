"""The fleet's own certificate authority: mutual TLS between Envoys and the control plane.

``wsfleet up`` and ``wsfleet keygen`` create it in the state dir (``tls/``): a CA, the
control plane's server certificate (names ``xds-server``, ``localhost``, 127.0.0.1), and
one client certificate per Envoy whose subject names the node it may claim to be
(CN = node id, OU = region). The control plane serves xDS only to clients with a
certificate from this CA, and only under the node id and region their certificate names
(or, for the pods of a Kubernetes Deployment that share a certificate, a pod name of that
Deployment: :func:`node_proven_by`): configuration, endpoints and the TLS keys of SDS
secrets go to proven Envoys only.

Keys are EC P-256, files mode 0600; certificates last a year (the CA ten), and a
certificate that expires within 30 days is issued again at the next start.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wsfleet.secret_files import write_private

TLS_DIR = "tls"
CA_NAME = "fleet-ca"
SERVER_NAME = "xds-server"  # the name Envoys check in the control plane's certificate
SERVER_NAMES = (SERVER_NAME, "localhost")
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class NodeIdentity:
    """Who a client certificate says its holder is."""

    node_id: str
    region: str


# what Kubernetes appends to a Deployment's name to name one of its pods: the ReplicaSet's
# pod-template hash, then 5 random characters
_POD_SUFFIX = re.compile(r"-[a-z0-9]{1,10}-[a-z0-9]{5}")


def node_proven_by(node_id: str, cert_name: str) -> bool:
    """Whether a client certificate naming ``cert_name`` proves node ``node_id``: the very
    name, or the name of a pod of the Kubernetes Deployment called ``cert_name``
    (``envoy-zone-a-7d9f8c6b5-x2k4q`` for ``envoy-zone-a``: the replicas of a zone share
    its certificate, each is its own node so that a drain can name one). Nothing else: no
    other segment, no upper case, no empty part (the region is checked apart)."""
    if not cert_name:
        return False
    if node_id == cert_name:
        return True
    prefix = cert_name + "-"
    return node_id.startswith(prefix) and _POD_SUFFIX.fullmatch(node_id, len(cert_name)) is not None


def tls_dir(state_dir: Path) -> Path:
    return state_dir / TLS_DIR


def files(tls: Path, name: str) -> Pair:
    """Where certificate ``name`` (``CA_NAME``, ``SERVER_NAME``, :func:`node_name`) and its
    key live in a TLS directory."""
    return Pair(tls / f"{name}.crt", tls / f"{name}.key")


def node_name(node_id: str) -> str:
    return f"node-{node_id}"


def ca_file(state_dir: Path) -> Path:
    return files(tls_dir(state_dir), CA_NAME).cert


def ensure_ca(state_dir: Path) -> Pair:
    """The fleet CA, created if missing."""
    pair = _pair(state_dir, CA_NAME)
    if not (pair.cert.exists() and pair.key.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wsfleet fleet CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write(pair, cert, key)
    return pair


def ensure_server_pair(state_dir: Path) -> Pair:
    """The control plane's certificate (for every name and address it is reached by)."""
    return _ensure_issued(
        state_dir,
        SERVER_NAME,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]),
        [
            *(x509.DNSName(name) for name in SERVER_NAMES),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )


def ensure_node_pair(state_dir: Path, node_id: str, region: str) -> Pair:
    """An Envoy's client certificate: it may be node ``node_id`` of ``region``, only."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, region),
        ]
    )
    return _ensure_issued(
        state_dir, node_name(node_id), subject, [], ExtendedKeyUsageOID.CLIENT_AUTH
    )


def node_identity(cert_pem: bytes) -> NodeIdentity | None:
    """The node a (verified) client certificate names; None if it names none."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    regions = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(regions) != 1:
        return None
    return NodeIdentity(str(names[0].value), str(regions[0].value))


def _ensure_issued(
    state_dir: Path,
    file_name: str,
    subject: x509.Name,
    alt_names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> Pair:
    pair = _pair(state_dir, file_name)
    if pair.cert.exists() and pair.key.exists():
        current = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        if current.subject == subject and current.not_valid_after_utc - RENEW_BEFORE > _now():
            return pair
    ca = ensure_ca(state_dir)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    _write(pair, builder.sign(ca_key, hashes.SHA256()), key)
    return pair


def _pair(state_dir: Path, name: str) -> Pair:
    return files(tls_dir(state_dir), name)


def _write(pair: Pair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pair.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(pair.key, key_pem, replace=True)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
