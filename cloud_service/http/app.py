"""``create_app``: the FastAPI application of the Cloud Service's HTTPS port.

It adds the access log middleware, the short way of the calls every job makes
(``shortcuts.Shortcuts``) and the error envelope, puts the ``Deps`` on ``app.state`` and
includes one router per resource, those every job calls first (no two share a path).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_service.clf import ClfLog
from cloud_service.http import apidocs, console, defaults, events, jobs, manage, objects, operators, services
from cloud_service.http.deps import Deps
from cloud_service.http.responses import OrjsonResponse, add_error_handlers
from cloud_service.http.shortcuts import Shortcuts


class ClfMiddleware:
    """One CLF line per HTTP request, with the authenticated user and the body size sent."""

    def __init__(self, app: ASGIApp, clf: ClfLog) -> None:
        self.app = app
        self.clf = clf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"status": 500, "bytes": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            user = scope.get("state", {}).get("user")
            self.clf.http(client[0], user, scope["method"], scope["path"], scope.get("http_version", "1.1"),
                          state["status"], state["bytes"])


#: The API documentation's groups, in the order a reader meets them (not the routers' order).
TAGS = ("operators", "services", "jobs", "users", "accounting", "devices", "sharing", "defaults", "console")


def create_app(deps: Deps) -> FastAPI:
    app = FastAPI(title="cloudimaging", version="0.1.0", default_response_class=OrjsonResponse,
                  docs_url=None, redoc_url=None, openapi_tags=[{"name": tag} for tag in TAGS],
                  description="Cloud Print Service after the PWG Cloud Imaging Model. "
                              "Authenticate with `Authorization: Bearer <token>`.")
    app.state.deps = deps
    app.add_middleware(Shortcuts, deps=deps)  # inside the access log: added first
    app.add_middleware(ClfMiddleware, clf=deps.clf)
    add_error_handlers(app)
    # No two routers share a path (tests/test_http_routes.py), so their order decides only how
    # many routes a request is matched against: the presigned transfers and the jobs, called
    # for every job, come first.
    for module in (objects, jobs, events, operators, services, manage, defaults):
        app.include_router(module.router)
    apidocs.install(app)
    app.include_router(console.router)  # last: its pages take only the paths left
    return app
