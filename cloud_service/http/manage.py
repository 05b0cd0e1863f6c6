"""The HTTP API for managing the service: users and tokens, devices and enrollment, sharing,
prices, quotas, credits and accounting. Included by cloud_service.http.create_app.

Status codes: 401 without a valid token; 403 with a valid token that lacks the right (a user
calling an admin route, a user acting on a device they can see but do not own); 404 for what
the caller may not even see (another owner's device, a service not shared with them).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cloud_service import accounting, sharing, users
from cloud_service.auth import (
    TokenNotFound,
    User,
    check_user_name,
    create_token,
    find_token,
    list_tokens,
    revoke_token,
    token_hash,
    token_id,
)
from cloud_service.db import DeviceRow, ServiceRow, TokenRow
from cloud_service.errors import Refusal
from cloud_service.http.deps import Deps, current_user, get_deps
from cloud_service.http.params import PathName, ShareId
from cloud_service.http.responses import OrjsonResponse
from cloud_service.registration import Registry
from schemas.api import API_PREFIX
from schemas.enums import ServiceKind

router = APIRouter(default_response_class=OrjsonResponse)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Literal["person", "service-account"] = "person"
    role: Literal["admin", "owner", "user"] = "user"
    groups: list[str] = []
    #: Also make a first token and return it (shown once).
    token: bool = False


class UserUpdate(_Body):
    role: Literal["admin", "owner", "user"] | None = None
    groups: list[str] | None = None
    disabled: bool | None = None


class TokenCreate(_Body):
    #: Whose token; default the caller. Only admins make tokens for others.
    user: str | None = None
    label: Annotated[str, Field(max_length=255)] | None = None
    #: Lifetime in seconds; default: until revoked.
    expires_in: Annotated[float, Field(gt=0)] | None = None


class DeviceCreate(_Body):
    device_id: Annotated[str, Field(min_length=1, max_length=64)]
    #: Register for another user (admins only); default the caller.
    owner: str | None = None


class Revoke(_Body):
    reason: Annotated[str, Field(max_length=64)] = "revoked"


class Enroll(_Body):
    code: Annotated[str, Field(min_length=1, max_length=128)]
    csr: Annotated[str, Field(min_length=1, max_length=16384)]


class ShareCreate(_Body):
    #: A service name of the device, or "*" for all of them (also those it reports later).
    service: Annotated[str, Field(min_length=1, max_length=64)] = sharing.ALL_SERVICES
    user: str | None = None
    group: str | None = None
    everyone: bool = False


class PolicyUpdate(_Body):
    price_per_impression: Annotated[int, Field(ge=0)] | None = None
    document_retention: Literal["discard-after-processing", "after-duration", "keep"] | None = None
    document_retention_seconds: Annotated[float, Field(gt=0)] | None = None
    history_retention_seconds: Annotated[float, Field(gt=0)] | None = None


class QuotaSet(_Body):
    impression_limit: Annotated[int, Field(ge=0)]
    period_days: Annotated[float, Field(gt=0)] | None = None


class CreditAdd(_Body):
    amount: int
    note: Annotated[str, Field(max_length=500)] | None = None


def _token_json(row: TokenRow) -> dict[str, Any]:
    return {"id": token_id(row.token_hash), "user": row.user, "label": row.label, "created_at": row.created_at,
            "created_by": row.created_by, "expires_at": row.expires_at, "revoked_at": row.revoked_at}


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def require_admin(user: User, request: Request) -> None:
    if not user.is_admin:
        raise Refusal(403, "forbidden", "this needs the admin role")


async def service_of(deps: Deps, user: User, kind: ServiceKind, name: str) -> tuple[ServiceRow, DeviceRow]:
    """The service if the caller owns its device (or is admin); 403 if they only use it."""
    service = await deps.jobs.resolve_service(kind, name, user)
    device = await sharing.owned_device(deps.store, user, service.device_id)
    return service, device


def need_registry(deps: Deps) -> Registry:
    if deps.registry is None:
        raise Refusal(503, "unavailable", "device registration is not configured")
    return deps.registry


# ------------------------------------------------------------------ me, users, tokens

@router.get(f"{API_PREFIX}/me", tags=["users"])
async def me(user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    return {"name": user.name, "kind": user.kind, "role": user.role, "groups": list(user.groups),
            "balance": await accounting.balance(deps.store, user.name)}


@router.get(f"{API_PREFIX}/users", tags=["users"])
async def list_users(request: Request, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    require_admin(user, request)
    return {"users": [u.json() for u in await users.list_users(deps.store)]}


@router.post(f"{API_PREFIX}/users", tags=["users"], status_code=201)
async def create_user(body: UserCreate, request: Request, user: User = Depends(current_user),
                      deps: Deps = Depends(get_deps)) -> dict:
    require_admin(user, request)
    made = await users.create_user(deps.store, body.name, kind=body.kind, role=body.role, groups=body.groups,
                                   by=user.name)
    deps.audit.event("user-created", actor=user.name, client=_client(request), user=made.name, kind=made.kind,
                     role=made.role)
    out: dict[str, Any] = {"user": made.json()}
    if body.token:
        token = await create_token(deps.store, made.name, made.role, created_by=user.name)
        out["token"] = token
        out["token_id"] = token_id(token_hash(token))
        deps.audit.event("token-created", actor=user.name, client=_client(request), user=made.name,
                         token_id=out["token_id"])
    return out


@router.get(f"{API_PREFIX}/users/{{name}}", tags=["users"])
async def get_user(name: PathName, request: Request, user: User = Depends(current_user),
                   deps: Deps = Depends(get_deps)) -> dict:
    if name != user.name:
        require_admin(user, request)
    info = (await users.get_user(deps.store, name)).json()
    info["balance"] = await accounting.balance(deps.store, name)
    return info


@router.patch(f"{API_PREFIX}/users/{{name}}", tags=["users"])
async def update_user(name: PathName, body: UserUpdate, request: Request, user: User = Depends(current_user),
                      deps: Deps = Depends(get_deps)) -> dict:
    require_admin(user, request)
    info = await users.update_user(deps.store, name, role=body.role, groups=body.groups, disabled=body.disabled)
    deps.audit.event("user-updated", actor=user.name, client=_client(request), user=name, role=info.role,
                     groups=",".join(info.groups), disabled=info.disabled)
    return info.json()


@router.post(f"{API_PREFIX}/users/{{name}}/credits", tags=["accounting"])
async def add_credit(name: PathName, body: CreditAdd, request: Request, user: User = Depends(current_user),
                     deps: Deps = Depends(get_deps)) -> dict:
    require_admin(user, request)
    await users.get_user(deps.store, name)
    left = await accounting.add_credit(deps.store, name, body.amount, user.name, body.note)
    deps.audit.event("credit", actor=user.name, client=_client(request), user=name, amount=body.amount)
    return {"user": name, "balance": left}


@router.get(f"{API_PREFIX}/tokens", tags=["users"])
async def get_tokens(user_name: Annotated[str | None, Query(alias="user")] = None,
                     user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    if user.is_admin:
        rows = await list_tokens(deps.store, user_name)
    else:
        rows = await list_tokens(deps.store, user.name)
    return {"tokens": [_token_json(r) for r in rows]}


@router.post(f"{API_PREFIX}/tokens", tags=["users"], status_code=201)
async def new_token(body: TokenCreate, request: Request, user: User = Depends(current_user),
                    deps: Deps = Depends(get_deps)) -> dict:
    owner = body.user or user.name
    if owner != user.name:
        require_admin(user, request)
        try:
            check_user_name(owner)
        except ValueError as exc:
            raise Refusal(422, "bad-request", str(exc), attribute="user") from None
        target = await users.get_user(deps.store, owner)
        role = target.role
    else:
        role = user.role
    expires = time.time() + body.expires_in if body.expires_in else None
    token = await create_token(deps.store, owner, role, label=body.label, created_by=user.name, expires_at=expires)
    tid = token_id(token_hash(token))
    deps.audit.event("token-created", actor=user.name, client=_client(request), user=owner, token_id=tid)
    return {"token": token, "id": tid, "user": owner, "label": body.label, "expires_at": expires}


@router.delete(f"{API_PREFIX}/tokens/{{tid}}", tags=["users"])
async def delete_token(tid: PathName, request: Request, user: User = Depends(current_user),
                       deps: Deps = Depends(get_deps)) -> dict:
    try:
        row = await find_token(deps.store, tid)
    except TokenNotFound:
        raise Refusal(404, "not-found", f"no token {tid!r}") from None
    if row.user != user.name and not user.is_admin:
        raise Refusal(404, "not-found", f"no token {tid!r}")
    row = await revoke_token(deps.store, tid)
    deps.audit.event("token-revoked", actor=user.name, client=_client(request), user=row.user, token_id=tid)
    return _token_json(row)


# ------------------------------------------------------------------ devices and enrollment

@router.get(f"{API_PREFIX}/devices", tags=["devices"])
async def list_devices(user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    reg = need_registry(deps)
    return {"devices": [await reg.describe(d) for d in await reg.devices_for(user)]}


@router.post(f"{API_PREFIX}/devices", tags=["devices"], status_code=201)
async def register_device(body: DeviceCreate, request: Request, user: User = Depends(current_user),
                          deps: Deps = Depends(get_deps)) -> dict:
    reg = need_registry(deps)
    if body.owner is not None:
        try:
            check_user_name(body.owner)
        except ValueError as exc:
            raise Refusal(422, "bad-request", str(exc), attribute="owner") from None
    device, code, expires = await reg.register(user, body.device_id, body.owner)
    return {"device": await reg.describe(device), "enrollment_code": code, "code_expires_at": expires}


@router.get(f"{API_PREFIX}/devices/{{device_id}}", tags=["devices"])
async def get_device(device_id: PathName, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    reg = need_registry(deps)
    return await reg.describe(await sharing.owned_device(deps.store, user, device_id))


@router.post(f"{API_PREFIX}/devices/{{device_id}}/enrollment-codes", tags=["devices"], status_code=201)
async def new_code(device_id: PathName, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    code, expires = await need_registry(deps).issue_code(user, device_id)
    return {"device_id": device_id, "enrollment_code": code, "code_expires_at": expires}


@router.post(f"{API_PREFIX}/devices/{{device_id}}/revoke", tags=["devices"])
async def revoke_device(device_id: PathName, request: Request, body: Revoke | None = None,
                        user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    reason = body.reason if body else "revoked"
    result = await need_registry(deps).revoke(user, device_id, reason, client=_client(request))
    return result.json()


@router.delete(f"{API_PREFIX}/devices/{{device_id}}", tags=["devices"])
async def deregister_device(device_id: PathName, request: Request, user: User = Depends(current_user),
                            deps: Deps = Depends(get_deps)) -> dict:
    result = await need_registry(deps).revoke(user, device_id, "deregistered", deregister=True,
                                          client=_client(request))
    return result.json()


@router.post(f"{API_PREFIX}/enroll", tags=["devices"])
async def enroll(body: Enroll, request: Request, deps: Deps = Depends(get_deps)) -> dict:
    """Device-initiated: the one-time code is the credential (no bearer token)."""
    return await need_registry(deps).enroll(body.code, body.csr, _client(request))


# ------------------------------------------------------------------ sharing

@router.get(f"{API_PREFIX}/devices/{{device_id}}/shares", tags=["sharing"])
async def get_shares(device_id: PathName, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    await sharing.owned_device(deps.store, user, device_id)
    return {"shares": [s.json() for s in await sharing.list_shares(deps.store, device_id)]}


async def _add_share(deps: Deps, user: User, device_id: str, body: ShareCreate, request: Request) -> dict:
    given = [k for k, v in (("user", body.user), ("group", body.group), ("everyone", body.everyone)) if v]
    if len(given) != 1:
        raise Refusal(422, "bad-request", "share with exactly one of user, group or everyone")
    kind = given[0]
    principal = body.user or body.group or sharing.EVERYONE
    share = await sharing.add_share(deps.store, device_id, body.service, kind, principal, user.name)
    deps.audit.event("share-added", actor=user.name, client=_client(request), device=device_id,
                     service=body.service, kind=kind, principal=principal)
    return share.json()


@router.post(f"{API_PREFIX}/devices/{{device_id}}/shares", tags=["sharing"], status_code=201)
async def add_device_share(device_id: PathName, body: ShareCreate, request: Request,
                           user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    await sharing.owned_device(deps.store, user, device_id)
    return await _add_share(deps, user, device_id, body, request)


@router.post(f"{API_PREFIX}/services/{{kind}}/{{name}}/shares", tags=["sharing"], status_code=201)
async def add_service_share(kind: ServiceKind, name: PathName, body: ShareCreate, request: Request,
                            user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    service, device = await service_of(deps, user, kind, name)
    body = body.model_copy(update={"service": service.name})
    return await _add_share(deps, user, device.id, body, request)


@router.delete(f"{API_PREFIX}/devices/{{device_id}}/shares/{{share_id}}", tags=["sharing"])
async def delete_share(device_id: PathName, share_id: ShareId, request: Request,
                       user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    await sharing.owned_device(deps.store, user, device_id)
    await sharing.remove_share(deps.store, device_id, share_id)
    deps.audit.event("share-removed", actor=user.name, client=_client(request), device=device_id, share=share_id)
    return {"ok": True}


# ------------------------------------------------------------------ policies, quotas, accounting

def _policy_json(device_id: str, service: str, row: Any) -> dict:
    fields = ("price_per_impression", "document_retention", "document_retention_seconds",
              "history_retention_seconds")
    out: dict[str, Any] = {"device_id": device_id, "service": service}
    out.update({f: getattr(row, f, None) if row is not None else None for f in fields})
    return out


@router.get(f"{API_PREFIX}/services/{{kind}}/{{name}}/policy", tags=["accounting"])
async def get_policy(kind: ServiceKind, name: PathName, user: User = Depends(current_user),
                     deps: Deps = Depends(get_deps)) -> dict:
    service = await deps.jobs.resolve_service(kind, name, user)  # users may read the price
    return _policy_json(service.device_id, service.name,
                        await accounting.policy(deps.store, service.device_id, service.name))


@router.put(f"{API_PREFIX}/services/{{kind}}/{{name}}/policy", tags=["accounting"])
async def put_policy(kind: ServiceKind, name: PathName, body: PolicyUpdate, request: Request,
                     user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    service, device = await service_of(deps, user, kind, name)
    row = await accounting.set_policy(deps.store, device.id, service.name, user.name,
                                      **body.model_dump(exclude_unset=True))
    deps.audit.event("policy-set", actor=user.name, client=_client(request), device=device.id, service=service.name)
    return _policy_json(device.id, service.name, row)


@router.get(f"{API_PREFIX}/services/{{kind}}/{{name}}/quotas", tags=["accounting"])
async def get_quotas(kind: ServiceKind, name: PathName, user: User = Depends(current_user),
                     deps: Deps = Depends(get_deps)) -> dict:
    service, device = await service_of(deps, user, kind, name)
    return {"quotas": [q.json() for q in await accounting.quotas(deps.store, device.id, service.name)]}


@router.put(f"{API_PREFIX}/services/{{kind}}/{{name}}/quotas/{{who}}", tags=["accounting"])
async def put_quota(kind: ServiceKind, name: PathName, who: PathName, body: QuotaSet, request: Request,
                    user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    service, device = await service_of(deps, user, kind, name)
    if who != "*":
        try:
            check_user_name(who)
        except ValueError as exc:
            raise Refusal(422, "bad-request", str(exc), attribute="user") from None
    await accounting.set_quota(deps.store, device.id, service.name, who, body.impression_limit, body.period_days,
                               user.name)
    deps.audit.event("quota-set", actor=user.name, client=_client(request), device=device.id, service=service.name,
                     user=who, limit=body.impression_limit)
    return {"quotas": [q.json() for q in await accounting.quotas(deps.store, device.id, service.name)]}


@router.delete(f"{API_PREFIX}/services/{{kind}}/{{name}}/quotas/{{who}}", tags=["accounting"])
async def delete_quota(kind: ServiceKind, name: PathName, who: PathName, request: Request,
                       user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    service, device = await service_of(deps, user, kind, name)
    await accounting.set_quota(deps.store, device.id, service.name, who, None, None, user.name)
    deps.audit.event("quota-removed", actor=user.name, client=_client(request), device=device.id,
                     service=service.name, user=who)
    return {"quotas": [q.json() for q in await accounting.quotas(deps.store, device.id, service.name)]}


@router.get(f"{API_PREFIX}/accounting", tags=["accounting"])
async def get_accounting(user_name: Annotated[str | None, Query(alias="user")] = None,
                         service: str | None = None, since: float | None = None,
                         user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """Per user and service: jobs, impressions the devices reported, cost. Admins see all,
    owners their devices' services and their own jobs, users their own jobs."""
    if user.is_admin:
        rows = await accounting.report(deps.store, user=user_name, service=service, since=since)
    elif user.role == "owner" and user_name != user.name:
        rows = await accounting.report(deps.store, user=user_name, owner_of=user.name, service=service, since=since)
        if user_name is None:  # and the owner's own printing elsewhere
            mine = await accounting.report(deps.store, user=user.name, service=service, since=since)
            seen = {(r["user"], r["service"]) for r in rows}
            rows += [r for r in mine if (r["user"], r["service"]) not in seen]
    else:
        if user_name not in (None, user.name):
            raise Refusal(403, "forbidden", "users see their own accounting only")
        rows = await accounting.report(deps.store, user=user.name, service=service, since=since)
    return {"accounting": rows}
