"""The two calls every job makes, answered before FastAPI's routing and dependency solving.

For each request FastAPI matches the routes in turn, then solves the route's dependencies (the
caller, the service's parts) and wraps the call in its own layers: 0.1-0.2 ms of CPU a request
on a 2-core machine, as much as a small download's own work (docs/bench.md). Each job comes
through the service's HTTPS port twice, as a client's submit (``POST /api/v1/jobs``) and as the
device's download of its document (a presigned ``GET /objects/...``), so ``Shortcuts`` answers
these two with the routes' own functions, the caller and the parts passed in, and their errors
as the app's handlers answer them (``responses.refusal_response``, ``disconnect_response``).
Anything else goes on to the app. The routes stay in their routers, so the API's description
and a router mounted alone (the tests) see them as before; the access log, outside, logs both.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_service.errors import Refusal
from cloud_service.http import jobs, objects
from cloud_service.http.deps import Deps, current_user
from cloud_service.http.responses import disconnect_response, refusal_response
from schemas.api import API_PREFIX

#: The submit's path (``jobs.create_job``).
SUBMIT = f"{API_PREFIX}/jobs"


class Shortcuts:
    """ASGI middleware for the service's app: see the module's docstring."""

    def __init__(self, app: ASGIApp, deps: Deps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app is served at the root (cloud_service.httpserver); a path below a root_path
        # matches neither and goes on to FastAPI's routes, which answer it the same.
        path = scope["path"] if scope["type"] == "http" else ""
        if scope.get("method") == "GET" and path.startswith(objects.PREFIX):
            response = await objects.get_object(path[len(objects.PREFIX):], Request(scope, receive), self.deps)
        elif scope.get("method") == "POST" and path == SUBMIT:
            response = await self._submit(Request(scope, receive))
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    async def _submit(self, request: Request) -> Response:
        try:
            return await jobs.create_job(request, await current_user(request, self.deps), self.deps)
        except Refusal as exc:
            return refusal_response(request, exc)
        except ClientDisconnect:
            return disconnect_response(request)
