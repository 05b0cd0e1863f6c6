"""The service's own parts in process, without a broker or a server: a store on SQLite in a
test's directory (or the given database_url), the local object store, the Document object and the CLF log.

For tests that drive the real DeviceProtocol, JobOperations or HTTP routers directly; closes
what it opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_service.accounting import Admission
from cloud_service.clf import ClfLog
from cloud_service.config import ServiceConfig
from cloud_service.db import create_schema, make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import Documents
from cloud_service.jobs import JobOperations
from cloud_service.objects import LocalObjectStore, UrlSigner
from cloud_service.store import JobStore

#: Presigned URLs name this base; nothing listens there (these tests move no bytes over HTTP).
BASE_URL = "https://127.0.0.1:1"


@dataclass
class ServiceParts:
    store: JobStore
    objects: LocalObjectStore
    documents: Documents
    clf: ClfLog
    config: ServiceConfig

    def devices(self, **options: Any) -> DeviceProtocol:
        return DeviceProtocol(self.store, self.documents, self.clf, **options)

    def jobs(self, notify: Callable[..., Any] = lambda *_: None) -> JobOperations:
        return JobOperations(self.store, self.documents, notify, Admission(self.store, self.config))


@contextlib.asynccontextmanager
async def service_parts(directory: Path, *, max_bytes: int = 1 << 20, url_ttl: float = 60.0,
                        config: ServiceConfig | None = None,
                        database_url: str | None = None) -> AsyncIterator[ServiceParts]:
    engine = make_engine(database_url or f"sqlite+aiosqlite:///{directory / 'service.db'}")
    await create_schema(engine)
    store = JobStore(engine)
    objects = LocalObjectStore(directory / "objects", UrlSigner(b"k" * 32, BASE_URL))
    clf = ClfLog(directory / "access.log")
    try:
        yield ServiceParts(store, objects, Documents(store, objects, max_bytes, url_ttl), clf,
                           config or ServiceConfig())
    finally:
        clf.close()
        await store.close()
        await engine.dispose()
