"""``cloudimaging cluster``: a local cluster on loopback in one command, for operators and tests.

What an operator runs in production, on one machine and each part a process of its own:
Mosquitto (TLS, passwords, the per-device ACL of deploy/mosquitto), the machine's PostgreSQL
(a database of the cluster's own, created on first run), an S3 server (moto's standalone
server, when installed and the service has an S3 store), N service replicas sharing the device
traffic through an MQTT 5 shared subscription, HAProxy in front of their HTTPS ports (TCP
passthrough: TLS ends at the replicas) and simulated devices, each a ``cloudimaging manager``
process (this module never imports the Manager). Every process's pid is recorded; ``stop``
ends them all, newest first.

Replicas get their configuration as ``CLOUDIMAGING_<FIELD>`` environment variables named by
deploy/cluster.env (the table Compose and Kubernetes carry too) and, for the fields that are
files or lists, a JSON file. On Mosquitto the username is the client id
(``use_username_as_clientid``), so each replica logs in as its own user ``cloud-service.N``
(a dot: no device id can take that name), all with the same rights in the ACL.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from broker.credentials import CredentialStore
from broker.private import private_dir
from cloud_service.config import ServiceConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ENV_TABLE = DEPLOY / "cluster.env"
#: The MQTT 5 shared-subscription group of the replicas.
SHARED_GROUP = "cloud"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/cloudimaging_cluster"
PRINTER_PREFIX = "sim-printer"
SERVICE_USER_PREFIX = "cloud-service."
CLI = str(Path(sys.executable).parent / "cloudimaging")


class ClusterError(RuntimeError):
    """A part of the cluster could not start; the message says which and shows its log."""


def env_table(path: Path = ENV_TABLE) -> dict[str, str]:
    """deploy/cluster.env as {name: example value}, in file order."""
    table: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            table[name.strip()] = value.strip()
    return table


def env_name(field_name: str) -> str:
    return "CLOUDIMAGING_" + field_name.upper()


def replica_environment(values: dict[str, Any], table: dict[str, str] | None = None) -> dict[str, str]:
    """The table's variables for one replica, from ``values`` (field name -> value).

    Exactly the table's names, no more, no fewer (a mismatch raises), so the launcher, Compose
    and Kubernetes cannot drift apart. None becomes the empty string (no value)."""
    table = env_table() if table is None else table
    env = {env_name(name): "" if value is None else _env_text(value) for name, value in values.items()}
    if set(env) != set(table):
        raise ClusterError(f"replica environment and {ENV_TABLE.name} differ: "
                           f"missing {sorted(set(table) - set(env))}, extra {sorted(set(env) - set(table))}")
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def free_port(host: str = "127.0.0.1", wanted: int = 0) -> int:
    """``wanted`` if it can be bound now, else a free ephemeral port."""
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ClusterError("no free port")


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``port`` (not listening) with SO_REUSEPORT, held until the process
    that will listen there has started.

    A port picked long before its listener binds it (the HTTPS port, named in every replica's
    configuration before HAProxy starts) can be taken meanwhile, above all as the source port
    of an outgoing connection (the replicas connect to PostgreSQL, Mosquitto and S3 while they
    start): the kernel gives a connection no port that a socket holds by ``bind``. HAProxy sets
    SO_REUSEPORT on its listeners, so it binds the held port beside this socket, which takes no
    connection since it does not listen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def find_tool(name: str, *candidates: str) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def _tls_ready(host: str, port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((host, port), timeout=1) as raw, context.wrap_socket(raw, server_hostname=host):
            return True
    except OSError:
        return False


def _tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Process:
    """One child of the cluster, in its own process group, its output in ``log``."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n==== start {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, env={**os.environ, **(self.env or {})})

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no goodbye: a crash."""
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        self.signal(signal.SIGTERM)
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class LocalCluster:
    """The whole cluster under ``data_dir/cluster``; ``client.json`` in ``data_dir`` (as ``up``)."""

    data_dir: Path
    replicas: int = 3
    devices: int = 1
    http_port: int = 8443
    broker_port: int = 8883
    database_url: str = DEFAULT_DATABASE_URL
    #: Drop the database on stop (tests); operators keep it, like ``up`` keeps its SQLite file.
    drop_database: bool = False
    #: "auto": S3 when the service has an S3 store and moto_server is installed; "off": files.
    s3: str = "auto"
    #: The simulated devices' print driver: "file" (one PDF per job) or "simulated" (printed.log).
    driver: str = "file"
    #: More options of that driver (e.g. the simulated printer's ``pages_per_second``).
    driver_options: dict[str, Any] = field(default_factory=dict)
    #: Extra ServiceConfig fields for every replica (timers of the fault tests, log level...).
    service_overrides: dict[str, Any] = field(default_factory=dict)
    #: Extra Manager config fields for every device.
    manager_overrides: dict[str, Any] = field(default_factory=dict)
    #: More broker users (device ids) to give passwords to (tests drive devices by hand).
    broker_users: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    procs: dict[str, Process] = field(default_factory=dict)
    token: str = ""

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.root = self.data_dir / "cluster"
        self.logs = self.root / "logs"
        self.replica_ports: list[int] = []
        self.s3_url: str | None = None
        self.stats_port = 0
        #: The HTTPS port held from the start until HAProxy listens on it (``hold_port``).
        self._http_held: socket.socket | None = None

    # ------------------------------------------------------------------ names

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.http_port}"

    @property
    def broker_url(self) -> str:
        return f"mqtts://{self.host}:{self.broker_port}"

    @property
    def device_ids(self) -> list[str]:
        return [PRINTER_PREFIX if i == 0 else f"{PRINTER_PREFIX}-{i + 1}" for i in range(self.devices)]

    def replica_name(self, index: int) -> str:
        return f"replica-{index + 1}"

    def replica_dir(self, index: int) -> Path:
        return self.root / self.replica_name(index)

    def access_log(self, index: int) -> Path:
        return self.replica_dir(index) / "logs" / "access.log"

    def device_dir(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    def output_dir(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "output"

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        from broker.pki import ensure_pki

        private_dir(self.root)
        private_dir(self.logs)
        self.pki = ensure_pki(private_dir(self.root / "pki"))
        self.http_port = free_port(self.host, self.http_port)
        self._http_held = hold_port(self.host, self.http_port)  # until HAProxy listens there
        self.broker_port = free_port(self.host, self.broker_port)
        self.passwords = self._passwords()
        try:
            await asyncio.to_thread(self._start_mosquitto)
            await self._create_database()
            await asyncio.to_thread(self._start_s3)
            for index in range(self.replicas):
                self._start_replica(index)
                if index == 0:  # the first creates (migrates) the schema; then the others
                    await self.wait_replica(0)
            for index in range(1, self.replicas):
                await self.wait_replica(index)
            await asyncio.to_thread(self._start_haproxy)
            await self._bootstrap()
            for device_id in self.device_ids:
                self.start_device(device_id)
            for device_id in self.device_ids:
                await self.wait_online(device_id)
            self._write_pids()
        except BaseException:
            await self.stop()
            raise

    def _passwords(self) -> dict[str, str]:
        """Broker passwords of the service users and devices, kept in 0600 files across runs."""
        names = [self.service_user(i) for i in range(self.replicas)] + self.device_ids + self.broker_users
        return {name: _secret(self.root / "secrets" / f"{name}.broker") for name in names}

    def service_user(self, index: int) -> str:
        return f"{SERVICE_USER_PREFIX}{index + 1}"

    # -- Mosquitto

    def _start_mosquitto(self) -> None:
        binary = find_tool("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
        if binary is None:
            raise ClusterError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        from broker.pki import write_crl

        directory = private_dir(self.root / "mosquitto")
        passwd = directory / "passwd"
        credentials = CredentialStore(passwd, scheme="pbkdf2-sha512")  # Mosquitto's $7$ format
        for name, password in self.passwords.items():
            if not credentials.verify(name, password):
                credentials.set(name, password)
        acl = directory / "acl"
        acl.write_text(mosquitto_acl([self.service_user(i) for i in range(self.replicas)]))
        crl = self.pki.ca_cert.parent / "crl.pem"
        if not crl.exists():
            write_crl(self.pki, [])
        self.device_broker_port = free_port(self.host)
        values = {
            "BIND_HOST": self.host, "PORT": str(self.broker_port), "CAFILE": str(self.pki.ca_cert),
            "CERTFILE": str(self.pki.server_cert), "KEYFILE": str(self.pki.server_key),
            "PASSWORD_FILE": str(passwd), "ACL_FILE": str(acl), "RUN_AS_USER": getpass.getuser(),
            "DEVICE_PORT": str(self.device_broker_port), "CRLFILE": str(crl),
        }
        conf = directory / "mosquitto.conf"
        conf.write_text("\n".join(string.Template((DEPLOY / "mosquitto" / name).read_text()).substitute(values)
                                  for name in ("mosquitto.conf.template", "mtls-listener.conf.template")))
        self.mosquitto_passwd = passwd
        proc = self.procs["mosquitto"] = Process("mosquitto", [binary, "-c", str(conf)], self.logs / "mosquitto.log")
        proc.start()
        self._wait(lambda: _tls_ready(self.host, self.broker_port, self.pki.ca_cert), proc, 20)

    # -- PostgreSQL

    async def _create_database(self) -> None:
        """Create the database named in ``database_url`` unless it exists (asyncpg, autocommit)."""
        try:
            import asyncpg
        except ImportError as exc:
            raise ClusterError("asyncpg is needed for PostgreSQL (pip install 'cloudimaging[postgres]')") from exc
        name = self.database_name
        try:
            conn = await asyncpg.connect(self._admin_dsn(), timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ClusterError(f"PostgreSQL at {self._admin_dsn()} is not reachable: {exc}") from exc
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    @property
    def database_name(self) -> str:
        name = urlsplit(self.database_url).path.lstrip("/")
        if not name or not all(ch.isalnum() or ch == "_" for ch in name):
            raise ClusterError(f"database URL must name a database of letters, digits and _: {self.database_url}")
        return name

    def _admin_dsn(self) -> str:
        """The same server's ``postgres`` database, in asyncpg's URL form."""
        parts = urlsplit(self.database_url)
        return urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))

    async def _drop_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._admin_dsn(), timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        finally:
            await conn.close()

    # -- S3

    @property
    def s3_available(self) -> bool:
        return "object_store" in ServiceConfig.model_fields and self._moto() is not None

    def _moto(self) -> str | None:
        return find_tool("moto_server", str(Path(sys.executable).parent / "moto_server"))

    def _start_s3(self) -> None:
        if self.s3 == "off" or not self.s3_available:
            return
        binary = self._moto()
        assert binary is not None
        port = free_port(self.host)
        proc = self.procs["s3"] = Process("s3", [binary, "-H", self.host, "-p", str(port)], self.logs / "s3.log")
        proc.start()
        self._wait(lambda: _tcp_ready(self.host, port), proc, 30)
        self.s3_url = f"http://{self.host}:{port}"

    # -- replicas

    def replica_values(self, index: int) -> dict[str, Any]:
        """The table's fields for replica ``index`` (deploy/cluster.env names them)."""
        s3 = self.s3_url is not None
        return {
            "data_dir": str(self.replica_dir(index)),
            "database_url": self.database_url,
            "broker_url": self.broker_url,
            "broker_kind": "mosquitto",
            "broker_username": self.service_user(index),
            "broker_password": self.passwords[self.service_user(index)],
            "mqtt_shared_group": SHARED_GROUP,
            "ca_file": str(self.pki.ca_cert),
            "tls_cert": str(self.pki.server_cert),
            "tls_key": str(self.pki.server_key),
            "pki_dir": str(self.pki.ca_cert.parent),
            "http_host": self.host,
            "http_port": self.replica_ports[index],
            "public_url": self.url,
            "object_store": "s3" if s3 else "local",
            "s3_endpoint_url": self.s3_url,
            "s3_bucket": "cloudimaging" if s3 else None,
            "s3_region": "us-east-1",
            "s3_access_key_id": "cloudimaging" if s3 else None,
            "s3_secret_access_key": "cloudimaging" if s3 else None,  # moto accepts any key
            "s3_create_bucket": s3,
        }

    def _start_replica(self, index: int) -> None:
        while len(self.replica_ports) <= index:
            self.replica_ports.append(free_port(self.host))
        directory = private_dir(self.replica_dir(index))
        if self.s3_url is None:
            self._share_objects(directory)
        values = self.replica_values(index)
        extra = {
            "device_broker_url": f"mqtts://{self.host}:{self.device_broker_port}",
            "broker_password_file": str(self.mosquitto_passwd),
            "broker_reload_command": ["kill", "-HUP", str(self.procs["mosquitto"].pid)],
            **self.service_overrides,
        }
        known = ServiceConfig.model_fields
        config = {k: v for k, v in {**values, **extra}.items() if k in known}
        ServiceConfig.model_validate(config)  # fail here, with the field, not in the child
        path = directory / "service.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh, indent=2)
        name = self.replica_name(index)
        proc = self.procs.get(name) or Process(name, [CLI, "service", "--config", str(path)],
                                               self.logs / f"{name}.log", env=replica_environment(values))
        self.procs[name] = proc
        proc.start()

    def _share_objects(self, directory: Path) -> None:
        """Without S3, the replicas share one objects directory and its URL-signing key."""
        from cloud_service.objects import load_or_create_secret

        shared = private_dir(self.root / "objects")
        load_or_create_secret(self.root / "objects.key")
        for link, target in ((directory / "objects", shared), (directory / "objects.key", self.root / "objects.key")):
            if not link.is_symlink():
                link.symlink_to(target)

    def restart_replica(self, index: int) -> None:
        self._start_replica(index)

    async def wait_replica(self, index: int, timeout: float = 60.0) -> None:
        proc = self.procs[self.replica_name(index)]
        url = f"https://{self.host}:{self.replica_ports[index]}/healthz"
        await asyncio.to_thread(self._wait, lambda: self._http_ok(url), proc, timeout)

    def _http_ok(self, url: str) -> bool:
        import httpx

        try:
            return httpx.get(url, verify=str(self.pki.ca_cert), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # -- HAProxy

    def _start_haproxy(self) -> None:
        binary = find_tool("haproxy", "/usr/sbin/haproxy")
        if binary is None:
            raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.stats_port = free_port(self.host)
        conf = self.root / "haproxy.cfg"
        conf.write_text(haproxy_config(self.host, self.http_port, self.stats_port,
                                       [(self.replica_name(i), self.host, p) for i, p in enumerate(self.replica_ports)],
                                       self.pki.ca_cert, health_path()))
        proc = self.procs["haproxy"] = Process("haproxy", [binary, "-db", "-f", str(conf)], self.logs / "haproxy.log")
        proc.start()
        self._wait(lambda: self._http_ok(f"{self.url}/healthz"), proc, 20)
        self._release_http_port()

    def _release_http_port(self) -> None:
        held, self._http_held = self._http_held, None
        if held is not None:
            held.close()

    # -- the admin and the devices

    async def _bootstrap(self) -> None:
        """As ``up``: an admin token in client.json, the devices registered to the admin and
        shared with everyone."""
        from cloud_service.auth import authenticate, create_token, ensure_user
        from cloud_service.db import make_engine
        from cloud_service.sharing import ALL_SERVICES, add_share
        from cloud_service.store import JobStore

        admin = getpass.getuser()
        engine = make_engine(self.database_url)
        store = JobStore(engine)
        try:
            await ensure_user(store, admin, "admin", promote=True)
            path = self.data_dir / "client.json"
            kept: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text())
                kept = loaded if isinstance(loaded, dict) else {}
            token = kept.get("token")
            if not isinstance(token, str) or await authenticate(store, token) is None:
                token = await create_token(store, admin, "admin")
            self.token = token
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({**kept, "url": self.url, "token": token, "ca": str(self.pki.ca_cert)}, fh, indent=2)
            for device_id in self.device_ids:
                device = await store.device(device_id)
                if device is None or device.owner is None:
                    await store.set_device(device_id, owner=admin, registered_at=time.time())
                    await add_share(store, device_id, ALL_SERVICES, "everyone", "*", admin)
        finally:
            await store.close()
            await engine.dispose()

    def manager_config(self, device_id: str) -> dict[str, Any]:
        directory = self.device_dir(device_id)
        return {
            "device_id": device_id, "broker_url": self.broker_url, "password": self.passwords[device_id],
            "ca_file": str(self.pki.ca_cert), "state_dir": str(directory / "state"),
            "services": [{
                "kind": "print", "name": device_id, "driver": self.driver,
                "driver_options": {"output_dir": str(self.output_dir(device_id)), **self.driver_options},
                "info": f"Simulated printer of the local cluster ({self.driver} driver)",
                "location": str(self.output_dir(device_id)),
                "make_and_model": "cloudimaging simulated printer",
            }],
            # The local S3 server (moto) serves plain http on loopback; a real S3 is https.
            "allow_http_documents": bool(self.s3_url and self.s3_url.startswith("http://")),
            **self.manager_overrides,
        }

    def start_device(self, device_id: str) -> None:
        directory = private_dir(self.device_dir(device_id))
        path = directory / "manager.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.manager_config(device_id), fh, indent=2)
        proc = self.procs.get(device_id) or Process(device_id, [CLI, "manager", "--config", str(path)],
                                                    self.logs / f"{device_id}.log")
        self.procs[device_id] = proc
        proc.start()

    async def wait_online(self, device_id: str, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, verify=str(self.pki.ca_cert), timeout=5,
                                     headers={"Authorization": f"Bearer {self.token}"}) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    response = await http.get(f"/api/v1/services/print/{device_id}")
                    if response.status_code == 200 and response.json()["online"]:
                        return
                await asyncio.sleep(0.2)
        raise ClusterError(f"{device_id} not online within {timeout:.0f}s:\n{self.procs[device_id].tail()}")

    # ------------------------------------------------------------------ helpers

    def _wait(self, ready: Any, proc: Process, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive:
                raise ClusterError(f"{proc.name} exited:\n{proc.tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise ClusterError(f"{proc.name} not ready within {timeout:.0f}s:\n{proc.tail()}")

    def _write_pids(self) -> None:
        pids = {name: proc.pid for name, proc in self.procs.items() if proc.alive}
        (self.root / "pids.json").write_text(json.dumps(pids, indent=2))

    def banner(self) -> str:
        objects = f"{self.s3_url} (S3, moto)" if self.s3_url else f"{self.root / 'objects'} (shared directory)"
        lines = [
            f"cloudimaging cluster is up: {self.replicas} replicas behind HAProxy.",
            f"  HTTPS API     {self.url}   (HAProxy, TCP passthrough; OpenAPI: {self.url}/docs)",
            f"  HAProxy stats http://{self.host}:{self.stats_port}/",
        ]
        for index, port in enumerate(self.replica_ports):
            lines.append(f"  {self.replica_name(index):13} https://{self.host}:{port}   "
                         f"(MQTT user {self.service_user(index)}; log {self.logs / self.replica_name(index)}.log)")
        lines += [
            f"  MQTT broker   {self.broker_url}   (Mosquitto, TLS, per-device ACL; shared group "
            f"$share/{SHARED_GROUP}/)",
            f"  device mTLS   mqtts://{self.host}:{self.device_broker_port}   (enrolled devices)",
            f"  PostgreSQL    {self.database_url}",
            f"  Objects       {objects}",
        ]
        for device_id in self.device_ids:
            lines.append(f"  Printer       {device_id}: printed jobs land in {self.output_dir(device_id)}")
        lines += [
            f"  Client config {self.data_dir / 'client.json'} (admin token for {getpass.getuser()})",
            f"  pids          {self.root / 'pids.json'}",
            "",
            "In another shell, from this directory:",
            "  .venv/bin/cloudimaging printers",
            "  .venv/bin/cloudimaging print FILE --wait",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)

    async def stop(self) -> None:
        """Stop every process we started, newest first (devices, HAProxy, replicas, S3, broker)."""
        self._release_http_port()
        for proc in reversed(list(self.procs.values())):
            await asyncio.to_thread(proc.stop)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "pids.json").unlink()
        if self.drop_database:
            with contextlib.suppress(Exception):
                await self._drop_database()


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


def mosquitto_acl(service_users: list[str]) -> str:
    """deploy/mosquitto/acl with the ``cloud-service`` block repeated for each replica's user."""
    base = (DEPLOY / "mosquitto" / "acl").read_text()
    head, marker, block = base.partition("user cloud-service\n")
    if not marker:
        raise ClusterError("deploy/mosquitto/acl has no 'user cloud-service' block")
    return head + "".join(f"user {user}\n{block}" for user in service_users)


def health_path() -> str:
    """The replicas' readiness path when the service has one, else liveness."""
    http = REPO / "cloud_service" / "http"
    sources = "".join(p.read_text() for p in http.glob("*.py")) if http.is_dir() else ""
    return "/readyz" if '"/readyz"' in sources else "/healthz"


def haproxy_config(host: str, port: int, stats_port: int, servers: list[tuple[str, str, int]], ca_file: Path,
                   check_path: str) -> str:
    """TCP passthrough (TLS ends at the replicas), health-checked over HTTPS every second; a
    replica that fails two checks leaves the rotation and its sessions are cut, so clients
    reconnect to a live one; ``redispatch`` retries a refused connection on another."""
    lines = [
        "global",
        "    maxconn 4000",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    retries 2",
        "    option redispatch",
        "frontend https",
        f"    bind {host}:{port}",
        "    default_backend replicas",
        "backend replicas",
        "    balance leastconn",
        f"    option httpchk GET {check_path}",
        "    http-check expect status 200",
        f"    default-server check check-ssl verify required ca-file {ca_file} inter 1s fall 2 rise 2 "
        "on-marked-down shutdown-sessions",
    ]
    lines += [f"    server {name} {h}:{p}" for name, h, p in servers]
    lines += [
        "listen stats",
        "    mode http",
        f"    bind {host}:{stats_port}",
        "    timeout client 30s",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 2s",
    ]
    return "\n".join(lines) + "\n"


# -- Compose: the one-shot set-up container ---------------------------------------------------------

#: The uid of the service image's user (deploy/Dockerfile) and of the eclipse-mosquitto image's.
SERVICE_UID = 10001
MOSQUITTO_UID = 1883


def compose_init(pki_dir: Path, mosquitto_dir: Path, replicas: int, service_password: str,
                 hostnames: list[str]) -> None:
    """What deploy/compose.yaml's ``setup`` container does before the others start: the CA and
    a server certificate naming the Compose hosts (the replicas own it), and for Mosquitto its
    own copy of the certificate and key, a password file with one user per replica and the ACL.
    Idempotent: a second run keeps the CA."""
    from broker.pki import ensure_pki

    pki = ensure_pki(pki_dir, hostnames)
    mosquitto_dir.mkdir(parents=True, exist_ok=True)
    for source in (pki.ca_cert, pki.server_cert, pki.server_key):
        (mosquitto_dir / source.name).write_bytes(source.read_bytes())
    users = [f"{SERVICE_USER_PREFIX}{i + 1}" for i in range(replicas)]
    credentials = CredentialStore(mosquitto_dir / "passwd", scheme="pbkdf2-sha512")
    for user in users:
        credentials.set(user, service_password)
    (mosquitto_dir / "acl").write_text(mosquitto_acl(users))
    values = {
        "BIND_HOST": "0.0.0.0", "PORT": "8883", "CAFILE": f"/mosquitto/config/{pki.ca_cert.name}",
        "CERTFILE": f"/mosquitto/config/{pki.server_cert.name}", "KEYFILE": f"/mosquitto/config/{pki.server_key.name}",
        "PASSWORD_FILE": "/mosquitto/config/passwd", "ACL_FILE": "/mosquitto/config/acl", "RUN_AS_USER": "mosquitto",
    }
    (mosquitto_dir / "mosquitto.conf").write_text(
        string.Template((DEPLOY / "mosquitto" / "mosquitto.conf.template").read_text()).substitute(values))
    if os.geteuid() == 0:
        for path in [pki_dir, *pki_dir.iterdir()]:
            os.chown(path, SERVICE_UID, SERVICE_UID)
        for path in [mosquitto_dir, *mosquitto_dir.iterdir()]:
            os.chown(path, MOSQUITTO_UID, MOSQUITTO_UID)


def _compose_init_main() -> None:
    """``python -m cloud_service.cluster compose-init``: compose_init from the environment."""
    env = os.environ
    compose_init(Path(env.get("CLOUDIMAGING_PKI_DIR", "/etc/cloudimaging/pki")),
                 Path(env.get("MOSQUITTO_CONFIG_DIR", "/mosquitto/config")),
                 int(env.get("REPLICAS", "3")), env["CLOUDIMAGING_BROKER_PASSWORD"],
                 env.get("TLS_HOSTNAMES", "localhost,127.0.0.1,mosquitto").split(","))


if __name__ == "__main__":
    if sys.argv[1:] != ["compose-init"]:
        sys.exit("usage: python -m cloud_service.cluster compose-init")
    _compose_init_main()
