"""broker.pki: the private CA and server certificate shared by the broker and the HTTPS service."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.pki import Pki, ensure_pki, issue_client_cert


def _sans(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName)), {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_files_modes_and_sans(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    assert pki == Pki(
        tmp_path / "pki/ca.pem", tmp_path / "pki/ca.key", tmp_path / "pki/server.pem", tmp_path / "pki/server.key"
    )
    for key in (pki.ca_key, pki.server_key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert pki.ca_cert.stat().st_mode & 0o077 == 0o044  # public, readable by other users
    dns, ips = _sans(pki.server_cert)
    assert dns == {"localhost"} and ips == {"127.0.0.1", "::1"}
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 3640 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 3660
    assert 725 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 735


def test_reused_across_calls(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path)
    before = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.server_cert, first.server_key)}
    second = ensure_pki(tmp_path)
    assert second == first
    assert {p: p.read_bytes() for p in before} == before


def test_missing_hostname_reissues_server_cert_only(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    ca_before, server_before = pki.ca_cert.read_bytes(), pki.server_cert.read_bytes()
    ensure_pki(tmp_path, ["broker.example.net", "192.0.2.7"])
    assert pki.ca_cert.read_bytes() == ca_before
    assert pki.server_cert.read_bytes() != server_before
    dns, ips = _sans(pki.server_cert)
    # The names asked for before are kept: the broker and the HTTPS service may ask differently.
    assert dns == {"localhost", "broker.example.net"} and ips == {"127.0.0.1", "::1", "192.0.2.7"}
    assert pki.server_key.stat().st_mode & 0o777 == 0o600
    again = pki.server_cert.read_bytes()
    ensure_pki(tmp_path, ["localhost"])  # a subset: nothing to do
    assert pki.server_cert.read_bytes() == again
    assert ipaddress.ip_address("192.0.2.7")


def test_contexts_handshake_with_hostname_check(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    server_ctx, client_ctx = pki.server_context(), pki.client_context()
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(5)

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5))

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        t.join(5)
    # A stranger's CA does not verify our server.
    other = ensure_pki(tmp_path / "other")
    assert other.ca_cert.read_bytes() != pki.ca_cert.read_bytes()


def test_issue_client_cert_from_csr(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )
    pem = issue_client_cert(pki, csr.public_bytes(serialization.Encoding.PEM), "printer-1")
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "printer-1"
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()))
