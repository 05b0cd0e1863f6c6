"""Composition of the Cloud Service: database, object store, MQTT adapter and HTTPS server.

``CloudService(config)``: ``await start()`` / ``await stop()``. Everything durable is in the
database and the object store, so a restart (or a second replica) picks up where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import text

from broker.limits import connection_budget
from broker.pki import ensure_pki
from broker.private import private_dir
from cloud_service.accounting import Admission
from cloud_service.audit import AuditLog
from cloud_service.auth import create_token
from cloud_service.changes import replicated_feed
from cloud_service.clf import ClfLog
from cloud_service.clock import Clock
from cloud_service.config import ServiceConfig
from cloud_service.db import create_schema, make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import Documents
from cloud_service.http import Deps, create_app
from cloud_service.httpserver import HttpsServer
from cloud_service.instance import database_instance
from cloud_service.ipp.front import IppFront
from cloud_service.jobs import JobOperations
from cloud_service.lease import lease_for
from cloud_service.mqtt import MqttAdapter, take_over_session
from cloud_service.objects import LocalObjectStore, ObjectStore, UrlSigner, load_or_create_secret
from cloud_service.registration import Registry
from cloud_service.retention import Sweeper
from cloud_service.store import JobStore
from cloud_service.supervisor import Supervisor, SupervisorPolicy
from cloud_service.transform.service import Transformer, thumbnail_pool
from schemas.messages import JobFetchable, Message

log = logging.getLogger("cloudimaging.service")
#: A readiness probe of the object store gives up after this long (seconds).
READY_TIMEOUT = 5.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class CloudService:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.port: int | None = None
        self._server: HttpsServer | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return self.config.base_url(self.port)

    def ipp_base(self) -> str:
        """``ipps://host:port`` of the IPP front (IPP over TLS on the HTTPS port)."""
        return "ipps://" + urlsplit(self.url).netloc

    def _tls_files(self) -> tuple[Path, Path, Path]:
        cfg = self.config
        if cfg.tls_cert and cfg.tls_key and cfg.ca_file:
            return cfg.tls_cert, cfg.tls_key, cfg.ca_file
        pki = ensure_pki(private_dir(cfg.data_dir / "pki"))
        return cfg.tls_cert or pki.server_cert, cfg.tls_key or pki.server_key, cfg.ca_file or pki.ca_cert

    async def start(self) -> None:
        cfg = self.config
        private_dir(cfg.data_dir)
        cert, key, ca = self._tls_files()
        self.engine = make_engine(cfg.db_url, pool_size=cfg.database_pool_size)
        await create_schema(self.engine)
        self.store = JobStore(self.engine)
        # Replicas on PostgreSQL: job changes cross replicas (LISTEN/NOTIFY), and one replica at
        # a time does the periodic work (an advisory-lock lease). On SQLite both are no-ops.
        self.feed = replicated_feed(cfg.db_url)
        if self.feed is not None:
            self.store.feed = self.feed
            await self.feed.start()
        self.lease = lease_for(cfg.db_url)
        await self.lease.start()
        self._socket = _bind(cfg.http_host, cfg.http_port)
        self.port = self._socket.getsockname()[1]
        signer = UrlSigner(load_or_create_secret(cfg.data_dir / "objects.key"), self.url)
        self.objects = await self._object_store(signer)
        self.clf = ClfLog(cfg.logs_dir / "access.log")
        self.documents = Documents(self.store, self.objects, cfg.max_document_bytes, cfg.url_ttl, Transformer())
        self.thumbnails = thumbnail_pool()  # apart from the transforms
        self.devices = DeviceProtocol(self.store, self.documents, self.clf,
                                      max_services=cfg.max_services_per_device,
                                      coalesce_presence=cfg.mqtt_shared_group is None)
        self.devices.instance = self.instance = await database_instance(self.engine)
        self.mqtt = MqttAdapter(cfg.broker_url, cfg.broker_username, cfg.broker_password, ca, self.devices,
                                self.clf, keepalive=cfg.keepalive, device_queue_limit=cfg.device_queue_limit,
                                client_id=cfg.mqtt_client_id, shared_group=cfg.mqtt_shared_group,
                                session_expiry=cfg.mqtt_session_expiry)
        self.jobs = JobOperations(self.store, self.documents, self._notify, Admission(self.store, cfg))
        # Security (docs/security.md): audit log, registration, retention sweeper.
        self.clock = Clock()
        self.audit = AuditLog(cfg.logs_dir / "security.log")
        self.audit.attach_broker()
        self.registry = Registry(self.store, cfg, self.audit, self.clock, self.url,
                                 functools.partial(take_over_session, cfg.device_broker_url or cfg.broker_url,
                                                   cfg.ca_file))
        self.sweeper = Sweeper(self.store, self.objects, cfg, self.clock, self.lease)
        self.supervisor = Supervisor(self.store, SupervisorPolicy(cfg.offline_grace, cfg.offline_abort_after,
                                                                  cfg.step_timeout, cfg.redeliver_after,
                                                                  cfg.incoming_timeout),
                                     self._notify, self.lease)
        self.app = create_app(Deps(store=self.store, jobs=self.jobs, objects=self.objects, clf=self.clf,
                                   audit=self.audit, config=cfg, registry=self.registry, ca_file=str(ca),
                                   ipp_base=self.ipp_base, readiness=self.readiness, thumbnails=self.thumbnails,
                                   request_status=lambda device_id: self.devices.request_status(
                                       device_id, self.mqtt.publish, cfg.status_timeout)))
        self.app.mount("/ipp", IppFront(store=self.store, jobs=self.jobs, https_base=lambda: self.url,
                                        ipp_base=self.ipp_base, audit=self.audit))
        # Connection cap, handshake, header and keep-alive timeouts: cloud_service/httpserver.py.
        self._server = HttpsServer(self.app, self._socket, certfile=str(cert), keyfile=str(key),
                                   max_connections=cfg.max_connections or connection_budget(),
                                   tls_handshake_timeout=cfg.tls_handshake_timeout,
                                   header_timeout=cfg.header_timeout, keep_alive_timeout=cfg.keep_alive_timeout,
                                   http_parser=cfg.http_parser)
        await self._server.start()
        await self.mqtt.start()
        self.supervisor.start(cfg.supervise_interval)
        await self.registry.start()
        self.sweeper.start()
        log.info("cloud service at %s (broker %s)", self.url, cfg.broker_url)

    async def _object_store(self, signer: UrlSigner) -> ObjectStore:
        cfg = self.config
        if cfg.object_store == "local":
            return LocalObjectStore(cfg.objects_dir, signer)
        from cloud_service.s3store import S3ObjectStore

        if not cfg.s3_bucket:
            raise ValueError("object_store is s3 but s3_bucket is not set")
        store = S3ObjectStore(cfg.s3_bucket, signer, endpoint_url=cfg.s3_endpoint_url, region=cfg.s3_region,
                              access_key_id=cfg.s3_access_key_id, secret_access_key=cfg.s3_secret_access_key,
                              part_bytes=cfg.s3_part_bytes, create_bucket=cfg.s3_create_bucket)
        await store.start()
        return store

    async def readiness(self) -> dict[str, str]:
        """Each dependency -> "ok" or why it is not reachable now (``/readyz``)."""
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["broker"] = "ok" if self.mqtt.connected.is_set() else "not connected"
        try:
            await asyncio.wait_for(self.objects.check(), READY_TIMEOUT)
            checks["objects"] = "ok"
        except Exception as exc:
            checks["objects"] = f"unreachable: {type(exc).__name__}"
        return checks

    def _notify(self, device_id: str, message: Message) -> None:
        """Publish to a device; doorbells name the database their job id belongs to."""
        if isinstance(message, JobFetchable) and message.instance is None:
            message = message.model_copy(update={"instance": self.instance})
        self.mqtt.publish(device_id, message)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if hasattr(self, "sweeper"):
            await self.sweeper.stop()
            self.audit.close()
        if hasattr(self, "mqtt"):
            await self.supervisor.stop()
            await self.mqtt.stop()
            with contextlib.suppress(Exception):  # the database may be gone: devices say hello again
                await self.devices.close()
        if hasattr(self, "store"):
            await self.store.close()
        if hasattr(self, "objects") and hasattr(self.objects, "close"):
            await self.objects.close()
        if getattr(self, "feed", None) is not None:
            await self.feed.stop()
        if hasattr(self, "lease"):
            await self.lease.stop()
        if hasattr(self, "engine"):
            await self.engine.dispose()
        if hasattr(self, "clf"):
            self.clf.close()
        if hasattr(self, "documents"):
            await asyncio.to_thread(self.documents.transformer.close)  # its worker processes
        if hasattr(self, "thumbnails"):
            await asyncio.to_thread(self.thumbnails.close)
        if self._socket is not None:
            self._socket.close()

    async def create_token(self, user: str, role: str = "user") -> str:
        return await create_token(self.store, user, role)
