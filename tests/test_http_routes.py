"""The service's HTTPS routes, as ``create_app`` orders them: each route is the first to match
its own paths, so the order of the routers decides nothing but the time spent matching (the
routers the devices and submitters call on every job are tried first: ``create_app``)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route

from cloud_service.http.app import TAGS, create_app


def routes_in_order() -> list[BaseRoute]:
    """Every route of the app in the order a request is matched against them (FastAPI keeps an
    included router as one entry that holds its own routes)."""
    app = create_app(SimpleNamespace(clf=None))  # type: ignore[arg-type]

    def flat(routes: list[Any]) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            out.extend(flat(inner.routes) if inner is not None else [route])
        return out

    return flat(app.router.routes)


def example_path(template: str) -> str:
    """A path the template matches: ``{x:path}`` as two segments, any other parameter as one."""
    return re.sub(r"\{[^}:]+(:[^}]+)?\}", lambda m: "a/b" if m.group(1) == ":path" else "print", template)


def first_match(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
             "query_string": b""}
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def test_each_route_is_the_first_to_match_its_own_paths() -> None:
    routes = routes_in_order()
    checked = 0
    for route in routes:
        if not isinstance(route, Route) or isinstance(route, Mount):
            continue
        path = example_path(route.path)
        for method in sorted(route.methods or ()):
            found = first_match(routes, method, path)
            assert found is route, f"{method} {path} reaches {getattr(found, 'path', found)}, not {route.path}"
            checked += 1
    assert checked >= 60, checked  # the whole API, not an empty list


def test_the_calls_of_every_job_are_matched_first() -> None:
    """A device's download and upload, a submit and a job's read are tried before the others."""
    paths = [getattr(route, "path", "") for route in routes_in_order()]
    hot = ["/objects/{key:path}", "/api/v1/jobs", "/api/v1/jobs/{job_id}"]
    assert all(paths.index(p) < 12 for p in hot), paths[:15]


def test_the_api_documentation_keeps_its_groups_in_reading_order() -> None:
    """The routers' order is chosen for matching; the documentation's groups keep their own."""
    document = create_app(SimpleNamespace(clf=None)).openapi()  # type: ignore[arg-type]
    used = {tag for operations in document["paths"].values() for op in operations.values()
            for tag in op.get("tags", [])}
    assert [t["name"] for t in document["tags"]] == list(TAGS)
    assert used <= set(TAGS), used - set(TAGS)
