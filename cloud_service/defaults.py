"""Each user's default service per kind, and the choice of a service when a job names none.

Before this, a job without a service went to the first online service in alphabetical order:
adding a printer could silently move everyone's jobs to it. Now the choice is explicit and
stable, in the habit of ``lpoptions -d``:

1. the service the job names;
2. the user's default for that kind (``PUT /api/v1/me/default/{kind}``), refused by name when
   it is no longer visible to them, never replaced by another printer;
3. the only service of that kind the user may see;
4. otherwise a refusal that lists the services to choose from.

The client adds its own local default (client.json) before step 2; see docs/cli.md.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from cloud_service.auth import User
from cloud_service.db import ServiceRow, UserDefaultRow
from cloud_service.errors import Refusal
from cloud_service.sharing import Access, usable_in
from cloud_service.store import JobStore
from schemas.enums import ServiceKind

#: The Refusal code when several services could take a job and the user has no default.
CHOOSE_SERVICE = "service-required"


async def get_default(store: JobStore, user: str, kind: ServiceKind) -> str | None:
    """The name of ``user``'s default ``kind`` service, or None when they have set none."""
    async with store.reads() as s:
        row = await s.get(UserDefaultRow, (user, kind.value))
        return row.service_name if row is not None else None


async def set_default(store: JobStore, user: str, kind: ServiceKind, name: str) -> None:
    """Store ``name`` as ``user``'s default (the caller has checked that they may use it)."""
    async with store.sessions.begin() as s:
        row = await s.get(UserDefaultRow, (user, kind.value))
        if row is None:
            s.add(UserDefaultRow(user=user, kind=kind.value, service_name=name, updated_at=time.time()))
        else:
            row.service_name, row.updated_at = name, time.time()


async def clear_default(store: JobStore, user: str, kind: ServiceKind) -> None:
    async with store.sessions.begin() as s:
        await s.execute(delete(UserDefaultRow).where(UserDefaultRow.user == user, UserDefaultRow.kind == kind.value))


async def _visible(store: JobStore, kind: ServiceKind, user: User | None) -> list[ServiceRow]:
    rows = await store.services(kind.value)
    if user is not None:
        access = await Access.load(store, user)
        rows = [(svc, dev, n) for svc, dev, n in rows if access.sees(dev, svc.name)]
    return [svc for svc, _, _ in rows]


async def choose_service(store: JobStore, kind: ServiceKind, user: User | None) -> ServiceRow:
    """The service for a job that names none (steps 2 to 4 of the module docstring).

    A user's default is looked up by its name (one read), not found in a list of every
    service: with thousands of printers that list is what a submit would cost.
    """
    if user is not None:
        name = await get_default(store, user.name, kind)
        if name is not None:
            found = await store.read(lambda conn: usable_in(conn, user, kind.value, name))
            if found is None:
                visible = await _visible(store, kind, user)
                raise Refusal(404, "not-found", f"your default {kind.value} service {name!r} does not exist "
                                                f"or is no longer shared with you: name a service, or set "
                                                f"another default", attribute="service",
                              supported=[svc.name for svc in visible])
            return found[0]
    visible = await _visible(store, kind, user)
    if not visible:
        raise Refusal(404, "not-found", f"no {kind.value} service is registered yet")
    if len(visible) == 1:
        return visible[0]
    names = sorted(svc.name for svc in visible)
    raise Refusal(409, CHOOSE_SERVICE, f"there are {len(names)} {kind.value} services and you have no default: "
                                       f"name one ({', '.join(names)}) or set a default",
                  attribute="service", supported=names)


async def default_names(store: JobStore, user: str) -> dict[str, str]:
    """Every default of ``user``, by kind."""
    async with store.reads() as s:
        rows = (await s.execute(select(UserDefaultRow).where(UserDefaultRow.user == user))).scalars()
        return {row.kind: row.service_name for row in rows}
