"""What the HTTP routes need, given to them through FastAPI dependencies.

``create_app`` puts one ``Deps`` on ``app.state.deps``; routes take it with
``Depends(get_deps)`` and the caller with ``Depends(current_user)``. A test can mount a single
router on a bare app the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request

from cloud_service.audit import AuditLog
from cloud_service.auth import User
from cloud_service.clf import ClfLog
from cloud_service.config import ServiceConfig
from cloud_service.credentials import parse_authorization, user_for
from cloud_service.errors import Refusal
from cloud_service.jobs import JobOperations
from cloud_service.objects import ObjectStore
from cloud_service.registration import Registry
from cloud_service.store import JobStore


@dataclass(frozen=True)
class Deps:
    """The service's parts the HTTP API works with.

    ``ipp_base()`` gives ``ipps://host:port`` for the services' IPP URIs (None: no IPP front);
    ``request_status(device_id)`` asks a device for its status now and says whether it answered;
    ``ca_file`` is trusted, besides the system's CAs, when fetching a job's document-uri;
``readiness()`` probes the dependencies for ``/readyz``.
    """

    store: JobStore
    jobs: JobOperations
    objects: ObjectStore
    clf: ClfLog
    audit: AuditLog
    config: ServiceConfig
    registry: Registry | None = None
    ca_file: str | None = None
    ipp_base: Callable[[], str] | None = None
    request_status: Callable[[str], Awaitable[bool]] | None = None
    #: Each dependency ("database", "broker", "objects") -> "ok" or why not, for /readyz.
    readiness: Callable[[], Awaitable[dict[str, str]]] | None = None


def get_deps(request: Request) -> Deps:
    return request.app.state.deps


async def current_user(request: Request, deps: Deps = Depends(get_deps)) -> User:
    """The caller, from ``Authorization: Bearer <token>``; 401 (and an audit event) otherwise."""
    credentials = parse_authorization(request.headers.get("authorization", ""))
    client = request.client.host if request.client else None
    if credentials is None or credentials.scheme != "bearer":
        deps.audit.event("auth-failed", outcome="denied", client=client, method=request.method,
                         path=request.url.path, reason="no bearer token")
        raise Refusal(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    user = await user_for(deps.store, credentials)
    if user is None:
        # The token is not logged, not even in part: only that one failed, from where.
        deps.audit.event("auth-failed", outcome="denied", client=client, method=request.method,
                         path=request.url.path, reason="invalid, expired or revoked token")
        raise Refusal(401, "unauthorized", "invalid or revoked token")
    request.scope.setdefault("state", {})["user"] = user.name
    return user
