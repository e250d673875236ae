"""TLS certificates named by the policy: read from files, checked, delivered over SDS.

A certificate is usable when its chain parses, its key parses, and the key
belongs to the first certificate of the chain. Anything else is rejected like
an invalid policy (the last good certificate keeps serving).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wsfleet.bounded_files import UnreadableFile, read_bounded
from xds_server.policy import Certificate


class CertificateProblem(Exception):
    """A certificate that cannot be served; ``path`` names the file at fault."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A checked certificate chain and key, as PEM text."""

    name: str
    chain_pem: str
    key_pem: str
    subject: str
    not_after: datetime.datetime

    def seconds_to_expiry(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.UTC)
        return (self.not_after - now).total_seconds()


def resolve(base_dir: Path, file: str) -> Path:
    path = Path(file)
    return path if path.is_absolute() else base_dir / path


MAX_PEM_BYTES = 256 * 1024  # a certificate chain or a key; real ones are a few KB


def _read(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_PEM_BYTES)
    except UnreadableFile as exc:
        raise CertificateProblem(path, str(exc)) from None


def load_certificate(spec: Certificate, base_dir: Path) -> LoadedCertificate:
    """Read and check one certificate; raise :class:`CertificateProblem` if unusable."""
    cert_path = resolve(base_dir, spec.cert_file)
    key_path = resolve(base_dir, spec.key_file)
    chain_pem = _read(cert_path)
    key_pem = _read(key_path)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateProblem(cert_path, f"not a PEM certificate chain ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateProblem(key_path, f"not an unencrypted PEM private key ({exc})") from None
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if leaf.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
        encoding, public
    ):
        raise CertificateProblem(key_path, f"key does not match the certificate in {cert_path}")
    return LoadedCertificate(
        name=spec.name,
        chain_pem=chain_pem.decode(),
        key_pem=key_pem.decode(),
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
    )


def certificate_files(specs: list[Certificate], base_dir: Path) -> list[Path]:
    """Every file the certificates are read from (what the watcher watches)."""
    return [resolve(base_dir, f) for spec in specs for f in (spec.cert_file, spec.key_file)]
