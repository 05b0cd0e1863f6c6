"""The API's description of itself: a valid ``/openapi.json`` and a Swagger UI that works offline.

``/openapi.json`` must be a document an OpenAPI tool accepts: the job route declares its
request body by hand (JSON or multipart, one handler), so the ``JobCreate`` schema it refers to
is added to the components here, with the models it uses. ``/docs`` is Swagger UI served from
the ``swagger-ui-bundle`` package under ``/docs/assets``: a service on a closed network (or a
browser with no route to a CDN) still gets its interactive documentation, and the page loads
no script from another host.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from schemas.api import JobCreate

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
#: Models referred to by hand (``openapi_extra``) rather than through a route's signature.
EXTRA_MODELS = (JobCreate,)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                           tags=app.openapi_tags)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in EXTRA_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)
    app.openapi_schema = document
    return document


def install(app: FastAPI) -> None:
    """Serve ``/openapi.json`` complete and ``/docs`` from local assets (create the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not there)."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png")
