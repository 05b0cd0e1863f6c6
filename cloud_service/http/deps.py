"""What the HTTP routes need, given to them through FastAPI dependencies.

``create_app`` puts one ``Deps`` on ``app.state.deps``; routes take it with
``Depends(get_deps)`` and the caller with ``Depends(current_user)``. A test can mount a single
router on a bare app the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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
from cloud_service.sessions import COOKIE, CSRF_HEADER, find_session
from cloud_service.store import JobStore
from cloud_service.transform.service import Transformer, thumbnail_pool


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
    #: The worker that draws page thumbnails (PDFium, never in the service's own threads).
    thumbnails: Transformer = field(default_factory=thumbnail_pool)


async def get_deps(request: Request) -> Deps:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a
    thread hop per request for one attribute read."""
    return request.app.state.deps


#: Methods that change nothing: a session cookie alone is enough for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(request: Request) -> bool:
    """False if the request says it comes from another site (``Origin``, else ``Referer``, naming
    another host than ``Host``). The host alone is compared: behind a TLS-terminating proxy the
    service sees http while the browser says https."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


async def session_user(request: Request, deps: Deps) -> User:
    """The caller from the console's session cookie (cloud_service.sessions): a request that
    changes something must also come from our own origin and carry the session's CSRF token."""
    client = request.client.host if request.client else None
    session = await find_session(deps.store, request.cookies.get(COOKIE))
    if session is None:
        deps.audit.event("auth-failed", outcome="denied", client=client, method=request.method,
                         path=request.url.path, reason="unknown or expired session")
        raise Refusal(401, "unauthorized", "not signed in, or the session has expired")
    if request.method not in SAFE_METHODS and (
            not same_origin(request) or not session.csrf_ok(request.headers.get(CSRF_HEADER))):
        deps.audit.event("csrf-refused", outcome="denied", actor=session.user.name, client=client,
                         method=request.method, path=request.url.path,
                         reason="foreign origin" if not same_origin(request) else "missing or wrong CSRF token")
        raise Refusal(403, "csrf", "this request needs the page's CSRF token (X-CSRF-Token) and our own origin")
    request.scope.setdefault("state", {})["user"] = session.user.name
    return session.user


async def current_user(request: Request, deps: Deps = Depends(get_deps)) -> User:
    """The caller, from ``Authorization: Bearer <token>`` or else the console's session cookie;
    401 (and an audit event) otherwise. Both give the same ``User``, so every permission check
    treats the page exactly as a script holding a token of that user."""
    if "authorization" not in request.headers and COOKIE in request.cookies:
        return await session_user(request, deps)
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
