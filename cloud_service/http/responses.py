"""The JSON response class and the error envelope every HTTP route answers with.

An error is ``{"error": {"code", "message", "attribute"?, "supported"?}}`` with its status;
``add_error_handlers`` makes Refusal, request validation and Starlette's own errors (404, 405)
answer that way, and audits every 403. A client that goes away mid-body (an abandoned upload)
is a client fault like any other: one log line and a 400 nobody reads, not a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cloud_service.errors import Refusal
from cloud_service.objects import ObjectStore, Peeked

log = logging.getLogger("cloudimaging.http")


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (fast, strict UTF-8)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def object_response(objects: ObjectStore, key: str, peeked: Peeked, media_type: str,
                    headers: dict[str, str] | None = None) -> Response:
    """A stored object as the answer: whole when it fits in one chunk (read already by
    ``peek``: no stream, no task watching the client), else streamed with its length."""
    if peeked.data is not None:
        return Response(peeked.data, media_type=media_type, headers=headers)
    return StreamingResponse(objects.read_stream(key), media_type=media_type,
                             headers={**(headers or {}), "Content-Length": str(peeked.size)})


def error_response(status: int, code: str, message: str, attribute: str | None = None,
                   supported: Any = None) -> OrjsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if attribute is not None:
        body["attribute"] = attribute
    if supported is not None:
        body["supported"] = supported
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return OrjsonResponse({"error": body}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer errors with the envelope; the audit log is ``app.state.deps.audit``."""

    @app.exception_handler(Refusal)
    async def _job_error(request: Request, exc: Refusal) -> OrjsonResponse:
        return refusal_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> OrjsonResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body",))
        return error_response(422, "bad-request", f"{where}: {first['msg']}", attribute=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> OrjsonResponse:
        return disconnect_response(request)


def refusal_response(request: Request, exc: Refusal) -> OrjsonResponse:
    """A Refusal as the envelope, a 403 audited (the audit log is ``app.state.deps.audit``)."""
    if exc.status == 403:
        audit = request.app.state.deps.audit
        audit.event("access-denied", outcome="denied", actor=request.scope.get("state", {}).get("user"),
                    client=request.client.host if request.client else None, method=request.method,
                    path=request.url.path, code=exc.code)
    return error_response(exc.status, exc.code, exc.message, exc.attribute, exc.supported)


def disconnect_response(request: Request) -> OrjsonResponse:
    """A client gone mid-body: one log line and a 400 nobody reads."""
    log.info("client went away during %s %s", request.method, request.url.path)
    return error_response(400, "client-disconnected", "the client closed the connection before the body ended")
