"""A small private PKI: one CA and one server certificate, made on first run and reused.

The embedded broker and the HTTPS service share the server certificate; devices and clients trust
the CA file. Made with `cryptography` so zero-setup installs need no openssl command line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=730)
CLIENT_VALIDITY = dt.timedelta(days=730)
#: A CRL's lifetime and when the service re-signs it (OpenSSL refuses all certificates after it).
CRL_VALIDITY = dt.timedelta(days=365)
CRL_RENEW_BEFORE = dt.timedelta(days=300)
#: The URI SAN naming a device in its client certificate.
DEVICE_URI = "urn:cloudimaging:device:"
#: Reissue the server certificate when less than this is left, so a long-running site never expires.
RENEW_BEFORE = dt.timedelta(days=30)
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")

GeneralName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class Pki:
    """Paths of the CA and server files; contexts built from them on demand."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @property
    def crl(self) -> Path:
        """The certificate revocation list of this CA (PEM), kept next to the CA certificate."""
        return self.ca_cert.parent / "crl.pem"

    def server_context(self, client_certificates: bool = False) -> ssl.SSLContext:
        """TLS server context (TLS 1.2+) presenting the server certificate.

        With ``client_certificates`` it asks for a client certificate signed by this CA
        (optional: password clients still connect; whoever presents one must present a valid
        one). Revocation is checked by the caller against the CRL, which can change while the
        context lives.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if client_certificates:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cafile=str(self.ca_cert))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS client context that trusts only this CA and checks the host name."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def ensure_pki(directory: Path, hostnames: Sequence[str] = DEFAULT_HOSTNAMES) -> Pki:
    """Create (first run) or reuse the CA and server certificate under `directory`.

    The server certificate is reissued from the same CA when its SANs miss one of `hostnames` or
    it nears expiry; clients keep trusting the unchanged CA file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _make_ca(ca_key)
        _write_key(pki.ca_key, ca_key)
        _write_public(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        _issue_server(pki, ca_key, ca_cert, hostnames)
        return pki

    ca_key = _load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    if not _server_cert_ok(pki, ca_cert, hostnames):
        # Keep the names the old certificate had: the broker and the HTTPS service may ask for
        # different lists, and reissuing for one must not drop the other's.
        _issue_server(pki, ca_key, ca_cert, [*hostnames, *_existing_names(pki)])
    return pki


def issue_client_cert(pki: Pki, csr_pem: bytes, common_name: str) -> bytes:
    """Sign a client certificate for `common_name` from a PEM CSR (for mTLS devices later).

    The subject is ours, not the CSR's: only the public key is taken from the request.
    """
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is invalid")
    ca_key = _load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CLIENT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_device_cert(pki: Pki, csr_pem: bytes, device_id: str,
                      validity: dt.timedelta = CLIENT_VALIDITY) -> x509.Certificate:
    """A device's client certificate: CN and a URI SAN name the device, nothing from the CSR
    but its public key is used. Refuses weak keys (EC below P-256, RSA below 2048 bits)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is invalid")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise ValueError("EC keys must be P-256 or stronger")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
    else:
        raise ValueError("the key must be EC (P-256+) or RSA (2048+)")
    ca_key = _load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"{DEVICE_URI}{device_id}")]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def write_crl(pki: Pki, revoked: Sequence[tuple[int, dt.datetime]], validity: dt.timedelta = CRL_VALIDITY) -> Path:
    """Sign and atomically replace the CRL with ``revoked`` (serial, revocation time) entries.

    Brokers that read it (Mosquitto's ``crlfile``, the embedded broker's gate) refuse those
    certificates on the next handshake. OpenSSL refuses *every* certificate once a CRL's
    nextUpdate has passed, so the service re-signs it well before (see CRL_RENEW_BEFORE).
    """
    ca_key = _load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + validity)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(pki.crl, crl.public_bytes(serialization.Encoding.PEM))
    return pki.crl


def crl_needs_renewal(pki: Pki) -> bool:
    """True when the CRL is missing, unreadable or close to its nextUpdate."""
    try:
        crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    except (OSError, ValueError):
        return True
    next_update = crl.next_update_utc
    return next_update is None or next_update - _now() < CRL_RENEW_BEFORE


def read_revoked_serials(pki: Pki) -> frozenset[int]:
    """Serials in the CRL, after checking the CA signed it; empty when there is no CRL.

    Raises ValueError for a CRL that is unreadable or not signed by this CA, so a broken or
    forged file is noticed instead of silently un-revoking everyone.
    """
    try:
        data = pki.crl.read_bytes()
    except FileNotFoundError:
        return frozenset()
    crl = x509.load_pem_x509_crl(data)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise ValueError(f"{pki.crl} is not signed by this CA")
    return frozenset(entry.serial_number for entry in crl)


def device_identity(der: bytes) -> tuple[str, int] | None:
    """(device id, serial) of a DER client certificate our CA issued to a device, else None."""
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(names) != 1:
        return None
    common_name = names[0].value
    return (common_name if isinstance(common_name, str) else common_name.decode()), cert.serial_number


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cloudimaging"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cloudimaging local CA"),
        ]
    )
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _general_names(hostnames: Sequence[str]) -> list[GeneralName]:
    names: list[GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _existing_names(pki: Pki) -> list[str]:
    """Host names and addresses in the current server certificate's SANs ([] if unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [*sans.get_values_for_type(x509.DNSName), *map(str, sans.get_values_for_type(x509.IPAddress))]


def _issue_server(
    pki: Pki, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hostnames: Sequence[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names = _general_names(hostnames)
    first = hostnames[0] if hostnames else "localhost"
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.server_key, key)
    _write_public(pki.server_cert, cert.public_bytes(serialization.Encoding.PEM))


def _server_cert_ok(pki: Pki, ca_cert: x509.Certificate, hostnames: Sequence[str]) -> bool:
    """True when the server cert exists, is signed by our CA, covers `hostnames` and is not near expiry."""
    if not (pki.server_cert.exists() and pki.server_key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        key = _load_key(pki.server_key)
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    have = set(sans)
    return all(name in have for name in _general_names(hostnames))


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _atomic_write(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _atomic_write(path, data, 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file created with `mode` so a key is never readable by others, even briefly."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
