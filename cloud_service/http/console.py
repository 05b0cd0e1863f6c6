"""The web console: its pages and files under ``/``, sign-in and sign-out, passwords, and the
admin's read-only views the API lacked (the security log, the retention defaults).

The page is static files from the package (``cloud_service/console/``) and uses the same API as
every client: a signed-in browser holds a session cookie (cloud_service.sessions) that
``current_user`` accepts as it accepts a token. Every page answer carries a Content-Security-
Policy that allows only our own origin and no inline script.
"""

from __future__ import annotations

import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import Field

from cloud_service.auth import User
from cloud_service.errors import Refusal
from cloud_service.http.deps import Deps, current_user, get_deps, same_origin
from cloud_service.http.params import PathName
from cloud_service.http.responses import OrjsonResponse
from cloud_service.passwords import MAX_LENGTH, check_password, has_password, set_password, verify_password
from cloud_service.sessions import (
    COOKIE,
    SESSION_TTL,
    close_session,
    close_user_sessions,
    find_session,
    open_session,
)
from schemas.api import API_PREFIX, ApiModel

router = APIRouter(default_response_class=OrjsonResponse)

#: Only our own origin, no inline script or style, no framing, no plugins.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
#: The views of the page; each serves index.html, which draws the view the path names.
VIEWS = ("printers", "print", "jobs", "scan", "fax", "devices", "admin")
#: Views that also show one item: ``/jobs/12``.
ITEM_VIEWS = ("jobs", "printers", "devices")
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png"}
#: Failed sign-ins allowed per user name and per client address within ``WINDOW`` seconds.
FAILURES_PER_USER = 5
FAILURES_PER_CLIENT = 20
WINDOW = 300.0


class Login(ApiModel):
    user: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]


class PasswordSet(ApiModel):
    password: Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]
    #: A user changing their own password gives the current one; an admin setting another's need not.
    current_password: Annotated[str, Field(max_length=MAX_LENGTH)] | None = None


class LoginThrottle:
    """Counts failed sign-ins per user name and per client in a sliding window (in memory: a
    restart forgives, a replica counts its own; the audit log keeps every failure)."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - WINDOW:
            q.popleft()
        return q

    def retry_after(self, user: str, client: str, now: float) -> float | None:
        for key, limit in ((f"u:{user}", FAILURES_PER_USER), (f"c:{client}", FAILURES_PER_CLIENT)):
            q = self._recent(key, now)
            if len(q) >= limit:
                return max(1.0, q[0] + WINDOW - now)
        return None

    def failed(self, user: str, client: str, now: float) -> None:
        if len(self._failures) > 10000:  # bounded: forget the oldest keys first
            for key in list(self._failures)[:5000]:
                del self._failures[key]
        for key in (f"u:{user}", f"c:{client}"):
            self._recent(key, now).append(now)

    def succeeded(self, user: str) -> None:
        self._failures.pop(f"u:{user}", None)


def _throttle(request: Request) -> LoginThrottle:
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        state.login_throttle = LoginThrottle()
    return state.login_throttle


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


# ------------------------------------------------------------------ sign-in and sign-out

@router.post(f"{API_PREFIX}/session", tags=["console"])
async def sign_in(body: Login, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    """Turn a user's name and password into a session cookie (HttpOnly, Secure, SameSite=Strict);
    the answer holds the session's CSRF token. Failures are rate-limited and audited."""
    client, now, throttle = _client(request), time.time(), _throttle(request)
    if not same_origin(request):
        deps.audit.event("login", outcome="denied", actor=body.user, client=client, reason="foreign origin")
        raise Refusal(403, "csrf", "sign in from this service's own page")
    wait = throttle.retry_after(body.user, client, now)
    if wait is not None:
        deps.audit.event("login", outcome="denied", actor=body.user, client=client, reason="rate-limited")
        raise Refusal(429, "too-many-attempts", f"too many failed sign-ins; try again in {int(wait) + 1} s")
    if not await verify_password(deps.store, body.user, body.password):
        throttle.failed(body.user, client, now)
        deps.audit.event("login", outcome="denied", actor=body.user, client=client,
                         reason="unknown user or wrong password")
        raise Refusal(401, "unauthorized", "wrong user name or password")
    session_id, _ = await open_session(deps.store, body.user, client, now)
    session = await find_session(deps.store, session_id, now)
    if session is None:  # the user is disabled
        await close_session(deps.store, session_id)
        deps.audit.event("login", outcome="denied", actor=body.user, client=client, reason="user disabled")
        raise Refusal(401, "unauthorized", "wrong user name or password")
    throttle.succeeded(body.user)
    deps.audit.event("login", actor=body.user, client=client)
    request.scope.setdefault("state", {})["user"] = body.user
    response = OrjsonResponse(_session_json(session))
    response.set_cookie(COOKIE, session_id, max_age=int(SESSION_TTL), path="/", secure=True, httponly=True,
                        samesite="strict")
    return response


def _session_json(session: object) -> dict:
    user = session.user  # type: ignore[attr-defined]
    return {"user": user.name, "role": user.role, "groups": list(user.groups), "kind": user.kind,
            "csrf": session.csrf, "expires_at": session.expires_at}  # type: ignore[attr-defined]


@router.get(f"{API_PREFIX}/session", tags=["console"])
async def get_session(request: Request, deps: Deps = Depends(get_deps)) -> dict:
    """The signed-in user and the session's CSRF token (readable only by our own pages: no CORS)."""
    session = await find_session(deps.store, request.cookies.get(COOKIE))
    if session is None:
        raise Refusal(401, "unauthorized", "not signed in")
    return _session_json(session)


@router.delete(f"{API_PREFIX}/session", tags=["console"])
async def sign_out(request: Request, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> Response:
    """End the session (the cookie's; a token caller has none to end)."""
    ended = await close_session(deps.store, request.cookies.get(COOKIE))
    deps.audit.event("logout", actor=user.name, client=_client(request))
    response = OrjsonResponse({"signed_out": ended})
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.put(f"{API_PREFIX}/users/{{name}}/password", tags=["users"])
async def put_password(name: PathName, body: PasswordSet, request: Request, user: User = Depends(current_user),
                       deps: Deps = Depends(get_deps)) -> dict:
    """Set a user's console password: an admin for anyone, a user for themself with the current
    one. Ends that user's sessions; their tokens stay."""
    check_password(body.password)
    if not user.is_admin:
        if user.name != name:
            raise Refusal(403, "forbidden", "only an admin sets another user's password")
        if await has_password(deps.store, name) and not await verify_password(
                deps.store, name, body.current_password or ""):
            deps.audit.event("password-set", outcome="denied", actor=user.name, client=_client(request),
                             user=name, reason="wrong current password")
            raise Refusal(403, "forbidden", "the current password is wrong", attribute="current_password")
    await set_password(deps.store, name, body.password, by=user.name)
    ended = await close_user_sessions(deps.store, name)
    deps.audit.event("password-set", actor=user.name, client=_client(request), user=name, sessions_ended=ended)
    return {"user": name, "sessions_ended": ended}


# ------------------------------------------------------------------ admin's read-only views

@router.get(f"{API_PREFIX}/security-log", tags=["console"])
async def security_log(limit: Annotated[int, Query(ge=1, le=2000)] = 200, user: User = Depends(current_user),
                       deps: Deps = Depends(get_deps)) -> dict:
    """The newest ``limit`` events of ``logs/security.log`` (admins only), newest first."""
    if not user.is_admin:
        raise Refusal(403, "forbidden", "this needs the admin role")
    path = deps.config.logs_dir / "security.log"
    lines: deque[str] = deque(maxlen=limit)
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                lines.append(line)
    events = []
    for line in reversed(lines):
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return {"events": events}


@router.get(f"{API_PREFIX}/retention", tags=["console"])
async def retention_defaults(user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """The service-wide retention defaults (admins only); per-service policies are under
    ``/services/{kind}/{name}/policy``."""
    if not user.is_admin:
        raise Refusal(403, "forbidden", "this needs the admin role")
    cfg = deps.config
    return {"document_retention": cfg.document_retention,
            "document_retention_seconds": cfg.document_retention_seconds,
            "history_retention_seconds": cfg.history_retention_seconds}


@router.get(f"{API_PREFIX}/enrollment-info", tags=["console"])
async def enrollment_info(request: Request, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """What a device needs besides its code to enroll: this service's URL and the CA that
    signed its certificate, with the CA's SHA-256 fingerprint to compare on the device (None
    for both when the service has no CA file of its own)."""
    if not user.may_register_devices:
        raise Refusal(403, "forbidden", "this needs the owner or admin role")
    url = str(request.base_url).rstrip("/")
    if not deps.ca_file:  # a certificate from a public CA: the device's system CAs verify it
        return {"url": url, "ca_pem": None, "ca_sha256": None}
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    pem = Path(deps.ca_file).read_bytes()
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex().upper()
    return {"url": url, "ca_pem": pem.decode("ascii"),
            "ca_sha256": ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))}


# ------------------------------------------------------------------ the page and its files

def _asset(name: str) -> bytes | None:
    if not name or "/" in name or name.startswith(".") or name.rpartition(".")[2] not in TYPES:
        return None
    try:
        return (resources.files("cloud_service.console") / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _page() -> Response:
    return Response(_asset("index.html"), media_type=TYPES["html"], headers=PAGE_HEADERS)


@router.get("/console/{name}", include_in_schema=False)
async def console_file(name: str) -> Response:
    body = _asset(name)
    if body is None:
        raise Refusal(404, "not-found", "no such file")
    headers = {**PAGE_HEADERS, "Cache-Control": "no-cache"}
    return Response(body, media_type=TYPES[name.rpartition(".")[2]], headers=headers)


@router.get("/login", include_in_schema=False)
async def login_page() -> Response:
    return _page()


async def _signed_in_page(request: Request, deps: Deps) -> Response:
    """The page if a session is live; else a redirect to the sign-in, back here afterwards."""
    if await find_session(deps.store, request.cookies.get(COOKIE)) is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303, headers=PAGE_HEADERS)
    return _page()


@router.get("/", include_in_schema=False)
async def home(request: Request, deps: Deps = Depends(get_deps)) -> Response:
    return await _signed_in_page(request, deps)


async def view_page(request: Request, deps: Deps = Depends(get_deps)) -> Response:
    return await _signed_in_page(request, deps)


async def item_page(item: PathName, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    return await _signed_in_page(request, deps)


for _view in VIEWS:  # explicit paths: nothing else of the service's (/ipp, /objects, /docs) is shadowed
    router.add_api_route(f"/{_view}", view_page, methods=["GET"], include_in_schema=False)
for _view in ITEM_VIEWS:
    router.add_api_route(f"/{_view}/{{item}}", item_page, methods=["GET"], include_in_schema=False)
