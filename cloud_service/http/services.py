"""The Service objects (printers, scanners, fax-out services) as the caller may see them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from cloud_service.auth import User
from cloud_service.errors import Refusal
from cloud_service.http.deps import Deps, current_user, get_deps
from cloud_service.http.params import PathName
from cloud_service.http.responses import OrjsonResponse
from cloud_service.sharing import Access
from cloud_service.transform import advertised_capabilities
from schemas.api import API_PREFIX, ServiceInfo, TicketCheck
from schemas.enums import ServiceKind
from schemas.model.service import service_overlay

router = APIRouter(default_response_class=OrjsonResponse)


async def service_info(deps: Deps, kind: str | None, name: str | None = None,
                       user: User | None = None) -> list[ServiceInfo]:
    """The services of ``kind`` (and ``name``) with the offline or revoked overlay; with ``user``, only
    those shared with them."""
    store, ipp_base = deps.store, deps.ipp_base
    out = []
    access = await Access.load(store, user) if user is not None else None
    for svc, dev, queued in await store.services(kind, name):
        if access is not None and not access.sees(dev, svc.name):
            continue
        status = service_overlay(svc.state, svc.state_reasons, svc.state_message, dev.online,
                                 revoked=dev.revoked_at is not None)
        out.append(ServiceInfo(kind=ServiceKind(svc.kind), name=svc.name, device_id=dev.id,
                               state=status.state, state_reasons=list(status.reasons),
                               state_message=status.message, info=svc.info, location=svc.location,
                               make_and_model=svc.make_and_model, online=dev.online,
                               last_seen=dev.last_seen, queued_jobs=queued,
                               capabilities=_capabilities(svc.kind, svc.capabilities),
                               supplies=svc.supplies or [],
                               ipp_uri=f"{ipp_base()}/ipp/print/{svc.name}"  # the IPP front serves print only
                               if ipp_base and svc.kind == ServiceKind.PRINT.value else None))
    return out


def _capabilities(kind: str, capabilities: dict) -> dict:
    """A print service offers its device's formats and those the service transforms into them."""
    return advertised_capabilities(capabilities) if kind == ServiceKind.PRINT.value else capabilities


@router.get(f"{API_PREFIX}/services", tags=["services"])
async def list_services(kind: ServiceKind | None = None, user: User = Depends(current_user),
                        deps: Deps = Depends(get_deps)) -> dict:
    """The services shared with the caller (all of them for an admin)."""
    found = await service_info(deps, kind.value if kind else None, user=user)
    return {"services": [s.model_dump(mode="json") for s in found]}


@router.get(f"{API_PREFIX}/services/{{kind}}/{{name}}", tags=["services"])
async def get_service(kind: ServiceKind, name: PathName, user: User = Depends(current_user),
                      deps: Deps = Depends(get_deps)) -> ServiceInfo:
    found = await service_info(deps, kind.value, name, user=user)
    if not found:
        raise Refusal(404, "not-found", f"no {kind.value} service named {name!r}")
    return found[0]


@router.post(f"{API_PREFIX}/services/{{kind}}/{{name}}/validate", tags=["services"])
async def validate(kind: ServiceKind, name: PathName, body: TicketCheck,
                   user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    service = await deps.jobs.resolve_service(kind, name, user)
    deps.jobs.check_ticket(service, body.ticket, body.document_format)
    return {"ok": True}


@router.post(f"{API_PREFIX}/services/{{kind}}/{{name}}/status-request", tags=["services"])
async def status_request(kind: ServiceKind, name: PathName, user: User = Depends(current_user),
                         deps: Deps = Depends(get_deps)) -> ServiceInfo:
    """Ask the device for its status now (model requirement 11). 504 if it does not answer:
    the device is then marked unreachable (its services show stopped, offline-report)."""
    service = await deps.jobs.resolve_service(kind, name, user)
    if deps.request_status is None or not await deps.request_status(service.device_id):
        raise Refusal(504, "device-unreachable", f"the device of {name!r} did not answer a status request")
    return (await service_info(deps, kind.value, name))[0]
