"""Users and service accounts: who may hold tokens, with which role and in which groups.

Roles: ``admin`` (everything), ``owner`` (registers devices and manages their services:
sharing, price, quotas, retention) and ``user`` (prints on services shared with them). A
service account is a user of kind ``service-account``: a program with its own tokens, which
may submit jobs like a person (Universal Print forbids it; users ask for it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import select

from cloud_service.auth import ROLES, USER_KINDS, check_user_name, revoke_user_tokens, token_cache
from cloud_service.db import UserRow
from cloud_service.errors import Refusal
from cloud_service.store import JobStore

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class UserInfo:
    name: str
    kind: str
    role: str
    groups: list[str]
    disabled: bool
    created_at: float
    created_by: str | None

    @classmethod
    def of(cls, row: UserRow) -> UserInfo:
        return cls(row.name, row.kind, row.role, list(row.groups or []), bool(row.disabled), row.created_at,
                   row.created_by)

    def json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "role": self.role, "groups": self.groups,
                "disabled": self.disabled, "created_at": self.created_at, "created_by": self.created_by}


def _groups(groups: list[str] | None) -> list[str]:
    out = []
    for group in groups or []:
        if not GROUP_RE.match(group):
            raise Refusal(422, "bad-request", f"invalid group name {group!r}", attribute="groups")
        out.append(group)
    return sorted(set(out))


def _check(name: str, kind: str, role: str) -> None:
    try:
        check_user_name(name)
    except ValueError as exc:
        raise Refusal(422, "bad-request", str(exc), attribute="name") from None
    if kind not in USER_KINDS:
        raise Refusal(422, "bad-request", f"kind must be one of {', '.join(USER_KINDS)}", attribute="kind")
    if role not in ROLES:
        raise Refusal(422, "bad-request", f"role must be one of {', '.join(ROLES)}", attribute="role")
    if kind == "service-account" and role == "admin":
        raise Refusal(422, "bad-request", "a service account cannot be an admin", attribute="role")


async def create_user(store: JobStore, name: str, *, kind: str = "person", role: str = "user",
                      groups: list[str] | None = None, by: str) -> UserInfo:
    _check(name, kind, role)
    async with store.sessions.begin() as s:
        if await s.get(UserRow, name) is not None:
            raise Refusal(409, "exists", f"user {name!r} exists already")
        row = UserRow(name=name, kind=kind, role=role, groups=_groups(groups), created_at=time.time(),
                      created_by=by, disabled=False)
        s.add(row)
    return UserInfo.of(row)


async def get_user(store: JobStore, name: str) -> UserInfo:
    async with store.reads() as s:
        row = await s.get(UserRow, name)
    if row is None:
        raise Refusal(404, "not-found", f"no user {name!r}")
    return UserInfo.of(row)


async def list_users(store: JobStore) -> list[UserInfo]:
    async with store.reads() as s:
        return [UserInfo.of(r) for r in await s.scalars(select(UserRow).order_by(UserRow.name))]


async def update_user(store: JobStore, name: str, *, role: str | None = None, groups: list[str] | None = None,
                      disabled: bool | None = None) -> UserInfo:
    """Change role, groups or the disabled flag; disabling also revokes every token."""
    async with store.sessions.begin() as s:
        row = await s.get(UserRow, name)
        if row is None:
            raise Refusal(404, "not-found", f"no user {name!r}")
        if role is not None:
            _check(name, row.kind, role)
            row.role = role
        if groups is not None:
            row.groups = _groups(groups)
        if disabled is not None:
            row.disabled = disabled
    token_cache(store).forget(user=name)  # the new role, groups or flag count from the next request
    if disabled:
        await revoke_user_tokens(store, name)
    return await get_user(store, name)
