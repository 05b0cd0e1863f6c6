"""The caller's default services (``/api/v1/me/default/{kind}``), in the habit of ``lpoptions -d``.

A job that names no service goes to the user's default of its kind, else to the only service
they may use; with several and no default it is refused with the list to choose from
(cloud_service.defaults). Setting a default checks the service exists and is shared with the
caller, so a default cannot be used to probe for private printers: those read as missing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from cloud_service import defaults
from cloud_service.auth import User
from cloud_service.http.deps import Deps, current_user, get_deps
from cloud_service.http.responses import OrjsonResponse
from schemas.api import API_PREFIX, DefaultService, DefaultServiceSet
from schemas.enums import ServiceKind

router = APIRouter(default_response_class=OrjsonResponse)

PATH = f"{API_PREFIX}/me/default/{{kind}}"


@router.get(PATH, tags=["defaults"])
async def get_default(kind: ServiceKind, user: User = Depends(current_user),
                      deps: Deps = Depends(get_deps)) -> DefaultService:
    """The caller's default ``kind`` service; ``service`` is null when none is set."""
    return DefaultService(kind=kind, service=await defaults.get_default(deps.store, user.name, kind))


@router.put(PATH, tags=["defaults"])
async def put_default(kind: ServiceKind, body: DefaultServiceSet, user: User = Depends(current_user),
                      deps: Deps = Depends(get_deps)) -> DefaultService:
    """Make ``body.service`` the caller's default; 404 unless it exists and is shared with them."""
    service = await deps.jobs.resolve_service(kind, body.service, user)
    await defaults.set_default(deps.store, user.name, kind, service.name)
    return DefaultService(kind=kind, service=service.name)


@router.delete(PATH, tags=["defaults"])
async def delete_default(kind: ServiceKind, user: User = Depends(current_user),
                         deps: Deps = Depends(get_deps)) -> DefaultService:
    """Forget the caller's default ``kind`` service (jobs then need a name, or the only one)."""
    await defaults.clear_default(deps.store, user.name, kind)
    return DefaultService(kind=kind)
