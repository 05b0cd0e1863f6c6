"""``cloudimaging up``: the whole embedded stack in one process, zero setup.

The amqtt broker (TLS, passwords, per-device ACL), the Cloud Service (HTTPS on the same CA)
and one simulated printer behind its own Manager, which connects over TLS like any remote
device would. First run creates the CA, the credentials and an admin token; later runs reuse
them, so jobs, tokens and devices survive a restart. It writes ``client.json`` so the CLI
works with no flags from the checkout.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

from broker.limits import connection_budget
from broker.private import private_dir
from cloud_service.app import CloudService
from cloud_service.auth import authenticate
from cloud_service.config import ServiceConfig
from manager.drivers.fax import SIMULATED_MODEM_CAPABILITIES
from manager.drivers.scanner import SIMULATED_SCANNER_CAPABILITIES
from manager.drivers.simulated import RASTER_PRINTER_CAPABILITIES, SIMULATED_SUPPLIES

PRINTER_ID = "sim-printer"


SCANNER_NAME = "sim-scanner"
FAX_NAME = "sim-fax"
#: Numbers the simulated modem answers busy / not at all, to try the retry policy.
SIM_FAX_BUSY = "tel:+15555550100"
SIM_FAX_NO_ANSWER = "tel:+15555550199"


def _port_free(host: str, port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _secret(path: Path) -> str:
    """A password kept in a 0600 file, made on first use."""
    from broker.credentials import generate_password

    if path.exists():
        return path.read_text().strip()
    private_dir(path.parent)
    value = generate_password()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


class EmbeddedStack:
    def __init__(self, data_dir: Path, http_port: int = 8443, broker_port: int = 8883, printer: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.http_port = http_port if _port_free(host, http_port) else 0
        self.broker_port = broker_port if _port_free(host, broker_port) else 0
        self.with_printer = printer
        self.manager: Any = None
        self.token: str | None = None

    async def start(self) -> None:
        from broker.credentials import CredentialStore
        from broker.embedded import EmbeddedBroker
        from broker.pki import ensure_pki

        private_dir(self.data_dir)
        self.pki = ensure_pki(private_dir(self.data_dir / "pki"))
        credentials_path = self.data_dir / "broker" / "passwd"
        credentials = CredentialStore(credentials_path)
        service_password = _secret(self.data_dir / "broker" / "cloud-service.secret")
        if not credentials.verify("cloud-service", service_password):
            credentials.set("cloud-service", service_password)
        # One process, two listeners: each gets half of the connection budget, so a flood of
        # one cannot take the descriptors the other needs (broker.limits).
        self.broker = EmbeddedBroker(self.pki, credentials_path, host=self.host, port=self.broker_port,
                                     max_connections=connection_budget(0.5))
        await self.broker.start()
        self.service = CloudService(ServiceConfig(
            data_dir=self.data_dir, broker_url=self.broker.url, broker_password=service_password,
            ca_file=self.pki.ca_cert, tls_cert=self.pki.server_cert, tls_key=self.pki.server_key,
            http_host=self.host, http_port=self.http_port, max_connections=connection_budget(0.5),
            pki_dir=self.pki.ca_cert.parent, broker_password_file=credentials_path))
        await self.service.start()
        await self._client_config()
        if self.with_printer:
            await self._register_printer()
            device = await self.service.store.device(PRINTER_ID)
            if device is not None and device.revoked_at is not None:
                # An admin revoked it: giving it its password back would undo that.
                self.with_printer = False
        if self.with_printer:
            await self._start_printer(credentials)

    async def _client_config(self) -> None:
        """Reuse the admin token in client.json if it is still valid, else make one."""
        path = self.data_dir / "client.json"
        token = None
        kept: dict = {}  # the user's own keys, e.g. "defaults" from `cloudimaging default`
        if path.exists():
            try:
                kept = json.loads(path.read_text())
                token = kept.get("token")
            except (OSError, ValueError, AttributeError):
                kept, token = {}, None
        kept = kept if isinstance(kept, dict) else {}
        if not token or await authenticate(self.service.store, token) is None:
            token = await self.service.create_token(getpass.getuser(), "admin")
        self.token = token
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**kept, "url": self.service.url, "token": token, "ca": str(self.pki.ca_cert)}, fh, indent=2)

    async def _register_printer(self) -> None:
        """First run: the simulated printer belongs to the admin who ran ``up`` and is shared
        with everyone, so every user the admin creates can print on it. Later runs leave the
        registration and shares as the admin changed them."""
        import time

        from cloud_service.sharing import ALL_SERVICES, add_share

        store = self.service.store
        device = await store.device(PRINTER_ID)
        if device is not None and device.owner is not None:
            return
        admin = getpass.getuser()
        await store.set_device(PRINTER_ID, owner=admin, registered_at=time.time())
        await add_share(store, PRINTER_ID, ALL_SERVICES, "everyone", "*", admin)

    def printer_config(self, password: str) -> dict[str, Any]:
        device_dir = self.data_dir / "devices" / PRINTER_ID
        return {
            "device_id": PRINTER_ID,
            "broker_url": self.broker.url,
            "password": password,
            "ca_file": str(self.pki.ca_cert),
            "state_dir": str(device_dir / "state"),
            "services": [{
                "kind": "print", "name": PRINTER_ID, "driver": "file",
                "driver_options": {"output_dir": str(device_dir / "output"),
                                   "supplies": [s.model_dump() for s in SIMULATED_SUPPLIES]},
                "capabilities": RASTER_PRINTER_CAPABILITIES,
                "info": "Simulated printer taking PWG raster and JPEG (writes each job to a folder)",
                "location": str(device_dir / "output"),
                "make_and_model": "cloudimaging simulated printer",
            }, {
                # The same device scans and faxes: one Manager serves all three services.
                "kind": "scan", "name": SCANNER_NAME, "driver": "simulated-scanner",
                "driver_options": {"adf_sheets": 3},
                "capabilities": SIMULATED_SCANNER_CAPABILITIES,
                "info": "Simulated scanner (makes test pages: platen 1, feeder 3 sheets)",
                "make_and_model": "cloudimaging simulated multifunction device",
            }, {
                "kind": "faxout", "name": FAX_NAME, "driver": "simulated-modem",
                "driver_options": {"output_dir": str(device_dir / "fax"), "busy": [SIM_FAX_BUSY],
                                   "no_answer": [SIM_FAX_NO_ANSWER]},
                "capabilities": SIMULATED_MODEM_CAPABILITIES,
                "info": f"Simulated fax modem (received faxes land in {device_dir / 'fax'})",
                "location": str(device_dir / "fax"),
                "make_and_model": "cloudimaging simulated multifunction device",
            }],
        }

    async def _start_printer(self, credentials: Any) -> None:
        from manager.app import Manager
        from manager.config import ManagerConfig

        password = _secret(self.data_dir / "devices" / PRINTER_ID / "broker.secret")
        if not credentials.verify(PRINTER_ID, password):
            credentials.set(PRINTER_ID, password)
        raw = self.printer_config(password)
        config_path = self.data_dir / "devices" / PRINTER_ID / "manager.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(raw, fh, indent=2)
        self.manager = Manager(ManagerConfig.model_validate(raw))
        await asyncio.to_thread(self.manager.start)

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "devices" / PRINTER_ID / "output"

    def banner(self) -> str:
        lines = [
            "cloudimaging is up.",
            f"  HTTPS API     {self.service.url}   (OpenAPI: {self.service.url}/docs)",
            f"  MQTT broker   {self.broker.url}   (TLS, per-device passwords and ACL)",
            f"  CA            {self.pki.ca_cert}",
            f"  CLF log       {self.data_dir / 'logs' / 'access.log'}",
        ]
        if self.with_printer:
            lines.append(f"  Printer       {PRINTER_ID}: printed jobs land in {self.output_dir}")
            lines.append(f"  Scanner       {SCANNER_NAME} (same device): cloudimaging scan -o scan.pdf")
            lines.append(f"  Fax           {FAX_NAME} (same device): received faxes land in "
                         f"{self.data_dir / 'devices' / PRINTER_ID / 'fax'}; {SIM_FAX_BUSY} is busy, "
                         f"{SIM_FAX_NO_ANSWER} never answers")
        lines += [
            f"  Client config {self.data_dir / 'client.json'} (admin token for {getpass.getuser()})",
            "",
            "In another shell, from this directory:",
            "  .venv/bin/cloudimaging printers",
            "  .venv/bin/cloudimaging print FILE -n 2 -o sides=two-sided-long-edge --wait",
            "  .venv/bin/cloudimaging jobs --all",
            "  .venv/bin/cloudimaging scan -o scan.pdf",
            "  .venv/bin/cloudimaging fax README.md --to tel:+15551234567 --wait",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)

    async def stop(self) -> None:
        if self.manager is not None:
            await asyncio.to_thread(self.manager.stop, 10.0)
        if hasattr(self, "service"):
            await self.service.stop()
        if hasattr(self, "broker"):
            await self.broker.stop()
