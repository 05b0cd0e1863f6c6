"""Operators' routes: a health check and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from cloud_service.http.deps import Deps, get_deps
from cloud_service.http.responses import OrjsonResponse
from schemas.enums import JobState

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/healthz", tags=["operators"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. It never looks at the dependencies (a restart would not
    bring them back)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operators"], responses={503: {"description": "a dependency is not reachable"}})
async def readyz(deps: Deps = Depends(get_deps)) -> Response:
    """Readiness: 200 once the database, the broker and the object store are all reachable,
    else 503 naming each one that is not, so a load balancer sends this replica no traffic."""
    if deps.readiness is None:
        return OrjsonResponse({"status": "ready", "checks": {}})
    checks = await deps.readiness()
    ready = all(value == "ok" for value in checks.values())
    return OrjsonResponse({"status": "ready" if ready else "not-ready", "checks": checks},
                          status_code=200 if ready else 503)


@router.get("/metrics", tags=["operators"], response_class=Response)
async def metrics(deps: Deps = Depends(get_deps)) -> Response:
    lines = ["# TYPE cloudimaging_jobs gauge"]
    counts: dict[str, int] = {}
    for row in await deps.store.list_jobs(owner=None, include_ended=True, limit=1_000_000):
        counts[row.state] = counts.get(row.state, 0) + 1
    for state in JobState:
        lines.append(f'cloudimaging_jobs{{state="{state.value}"}} {counts.get(state.value, 0)}')
    services = await deps.store.services()
    lines.append("# TYPE cloudimaging_devices_online gauge")
    lines.append(f"cloudimaging_devices_online {len({d.id for _, d, _ in services if d.online})}")
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
