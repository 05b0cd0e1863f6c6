"""``cloudimaging manager enroll CODE``: trade a one-time enrollment code for a device identity.

Run on the device. The device makes its own key (it never leaves the device), sends a CSR with
the code to the service over HTTPS (verified against ``--ca``; there is no way to skip the
check), and gets back a client certificate naming the device, signed by the service's CA. The
Manager then logs in to the broker with that certificate (mTLS) instead of a password.

Files written in ``--dir`` (default: the config file's directory): ``device.key`` (0600),
``device.pem``, ``ca.pem``. With ``--config`` a JSON config is created or updated in place
(identity fields only); a TOML config is left alone and the lines to add are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ENROLL_PATH = "/api/v1/enroll"


class EnrollError(Exception):
    """Enrollment failed; the message says why (bad code, unreachable service, ...)."""


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    broker_url: str
    cert_file: Path
    key_file: Path
    ca_file: Path


def make_key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh P-256 key and a CSR for it (the service sets the subject, not us)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudimaging-enrollment")]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def enroll(code: str, url: str, ca: Path | None, directory: Path, timeout: float = 30.0) -> Enrollment:
    """Do the exchange and write key, certificate and CA into ``directory``."""
    if not url.startswith("https://"):
        raise EnrollError("the service URL must be https://")
    key, csr = make_key_and_csr()
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except ssl.SSLError as exc:  # before OSError (its subclass); ssl names no file, we must
        raise EnrollError(f"--ca {ca}: not a PEM certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise EnrollError(f"--ca {ca}: {exc.strerror or exc}") from None
    try:
        response = httpx.post(url.rstrip("/") + ENROLL_PATH, json={"code": code.strip(), "csr": csr.decode()},
                              verify=context, timeout=timeout)
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise EnrollError(f"enrollment refused ({response.status_code}): {message}")
    body: dict[str, Any] = response.json()
    device_id, certificate = str(body["device_id"]), str(body["certificate"]).encode()
    x509.load_pem_x509_certificate(certificate)  # refuse garbage before writing anything
    key_file, cert_file, ca_file = directory / "device.key", directory / "device.pem", directory / "ca.pem"
    _write(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    _write(cert_file, certificate, 0o644)
    _write(ca_file, str(body["ca_certificate"]).encode(), 0o644)
    return Enrollment(device_id, str(body["broker_url"]), cert_file, key_file, ca_file)


def update_config(path: Path, result: Enrollment) -> bool:
    """Create or update a JSON config with the new identity; False for TOML (not rewritten)."""
    if path.suffix == ".toml":
        return False
    raw: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    base = path.resolve().parent

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(base))
        except ValueError:
            return str(p.resolve())

    raw.update(device_id=result.device_id, broker_url=result.broker_url, cert_file=rel(result.cert_file),
               key_file=rel(result.key_file), ca_file=rel(result.ca_file))
    for stale in ("password", "password_file", "username"):
        raw.pop(stale, None)
    raw.setdefault("state_dir", "state")
    raw.setdefault("services", [{"kind": "print", "name": result.device_id, "driver": "file"}])
    _write(path, (json.dumps(raw, indent=2) + "\n").encode(), 0o600)
    return True


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enroll", help="enroll this device with a one-time code from its owner",
        description="Make a key and CSR, exchange them and the code for a client certificate over HTTPS.")
    parser.add_argument("code", metavar="CODE", help="the enrollment code (one-time, short-lived)")
    parser.add_argument("--url", required=True, help="the service's HTTPS URL, e.g. https://print.example.org")
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) to verify the service; default system CAs")
    parser.add_argument("--config", dest="config", default=argparse.SUPPRESS, metavar="FILE",
                        help="Manager config to create or update (JSON)")
    parser.add_argument("--dir", type=Path, help="where to write device.key, device.pem, ca.pem "
                                                 "(default: the config's directory, else the current one)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = Path(args.config) if getattr(args, "config", None) else None
    directory = args.dir or (config.resolve().parent if config else Path.cwd())
    try:
        result = enroll(args.code, args.url, args.ca, directory)
    except EnrollError as exc:
        print(f"cloudimaging manager enroll: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled as device {result.device_id}; certificate {result.cert_file}, key {result.key_file}")
    if config is not None:
        if update_config(config, result):
            print(f"updated {config}; start it with: cloudimaging manager --config {config}")
        else:
            print(f"add to {config}: device_id = \"{result.device_id}\", broker_url = \"{result.broker_url}\", "
                  f"cert_file = \"{result.cert_file}\", key_file = \"{result.key_file}\", "
                  f"ca_file = \"{result.ca_file}\" (and remove any password)")
    else:
        print(f"broker: {result.broker_url}; put device_id, cert_file, key_file and ca_file in the Manager config")
    return 0
