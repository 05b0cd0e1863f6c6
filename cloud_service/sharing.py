"""Who may see and use which service: sharing by device owners, least privilege by default.

A service is visible to, and usable by:

- admins, always;
- the owner of its device (who registered it);
- users it is shared with: by name, through one of their groups, or with everyone.

Everyone else is told the service does not exist (404), so names of private printers do not
leak. Devices that were never registered (only given a broker password by an operator) have
no owner: only admins see them until an admin shares them. A deregistered device's services
are seen by admins only; a revoked device's services are seen but refuse new jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select

from cloud_service.auth import User
from cloud_service.db import DeviceRow, ServiceRow, ShareRow
from cloud_service.errors import Refusal
from cloud_service.prepared import Prepared
from cloud_service.store import JobStore, detached

PRINCIPAL_KINDS = ("user", "group", "everyone")

_shares = ShareRow.__table__
_SERVICES = ServiceRow.__table__
_DEVICES = DeviceRow.__table__
_SHARES_OF = select(_shares).where(_shares.c.device_id == bindparam("device_id"))
_SERVICE_AND_DEVICE = (select(_SERVICES, _DEVICES)
                       .select_from(_SERVICES.outerjoin(_DEVICES, _DEVICES.c.id == _SERVICES.c.device_id))
                       .where(_SERVICES.c.kind == bindparam("kind"), _SERVICES.c.name == bindparam("name")))
#: Run at every submit (the driver's cursor: cloud_service.prepared).
_SERVICE_DEVICE = Prepared(_SERVICE_AND_DEVICE)
_SERVICE_KEYS = tuple(c.key for c in _SERVICES.columns)
_DEVICE_KEYS = tuple(c.key for c in _DEVICES.columns)
#: A service of a kind and name with its device: a statement that reads more beside them
#: extends this one and hands its rows to ``usable_from`` (cloud_service.accounting).
SERVICE_AND_DEVICE = _SERVICE_AND_DEVICE
#: How many of such a row's leading columns are the service's and its device's.
SERVICE_AND_DEVICE_WIDTH = len(_SERVICE_KEYS) + len(_DEVICE_KEYS)
ALL_SERVICES = "*"
EVERYONE = "*"


@dataclass(frozen=True)
class Share:
    id: int
    device_id: str
    service: str
    kind: str
    principal: str
    created_by: str
    created_at: float

    def json(self) -> dict:
        return {"id": self.id, "device_id": self.device_id, "service": self.service, "kind": self.kind,
                "principal": self.principal, "created_by": self.created_by, "created_at": self.created_at}


def _share(row: ShareRow) -> Share:
    return Share(row.id, row.device_id, row.service_name, row.principal_kind, row.principal, row.created_by,
                 row.created_at)


def share_matches(user: User, row: ShareRow | Share) -> bool:
    kind = row.principal_kind if isinstance(row, ShareRow) else row.kind
    if kind == "everyone":
        return True
    if kind == "user":
        return row.principal == user.name
    if kind == "group":
        return row.principal in user.groups
    return False


def owns(user: User, device: DeviceRow | None) -> bool:
    """May ``user`` manage ``device`` (sharing, policies, codes, revocation)?"""
    if user.is_admin:
        return True
    return device is not None and device.owner is not None and device.owner == user.name \
        and device.deregistered_at is None


class Access:
    """Visibility decisions for one user, with the shares loaded once per request."""

    def __init__(self, user: User, shares: Iterable[ShareRow]) -> None:
        self.user = user
        self._shares: dict[str, list[ShareRow]] = {}
        for row in shares:
            self._shares.setdefault(row.device_id, []).append(row)

    @classmethod
    async def load(cls, store: JobStore, user: User) -> Access:
        if user.is_admin:
            return cls(user, ())
        async with store.reads() as s:
            rows = list(await s.scalars(select(ShareRow)))
        return cls(user, rows)

    @classmethod
    def of_device(cls, conn: Connection, user: User, device: DeviceRow) -> Access:
        """Inside a ``store.run`` transaction: enough to judge ``sees`` for this one device
        (its shares only, none read when the user is an admin or its owner)."""
        if user.is_admin or (device.owner is not None and device.owner == user.name):
            return cls(user, ())
        rows = conn.execute(_SHARES_OF, {"device_id": device.id}).mappings()
        return cls(user, [detached(ShareRow, m) for m in rows])

    def sees(self, device: DeviceRow, service_name: str) -> bool:
        if self.user.is_admin:
            return True
        if device.deregistered_at is not None:
            return False
        if device.owner is not None and device.owner == self.user.name:
            return True
        return any(share_matches(self.user, row) for row in self._shares.get(device.id, ())
                   if row.service_name in (ALL_SERVICES, service_name))


async def check_service(store: JobStore, user: User, service: ServiceRow) -> DeviceRow:
    """The service's device if ``user`` may use the service; else the same 404 as a missing one."""
    device = await store.device(service.device_id)
    access = await Access.load(store, user)
    if device is None or not access.sees(device, service.name):
        raise Refusal(404, "not-found", f"no {service.kind} service named {service.name!r}")
    return device


def usable_in(conn: Connection, user: User | None, kind: str, name: str
              ) -> tuple[ServiceRow, DeviceRow | None] | None:
    """Inside a ``store.run`` transaction: the service ``kind``/``name`` and its device, or None
    if there is none or ``user`` may not see it (the same answer: names of private services
    do not leak). One query for both rows, one more for the device's shares if needed."""
    found = _SERVICE_DEVICE.rows(conn, {"kind": kind, "name": name})
    return usable_from(conn, user, name, found[0]) if found else None


def usable_from(conn: Connection, user: User | None, name: str, row: Sequence[Any]
                ) -> tuple[ServiceRow, DeviceRow | None] | None:
    """``usable_in`` on a row already read that starts with ``SERVICE_AND_DEVICE``'s columns
    (a statement that reads more about the service in the same round trip)."""
    split = len(_SERVICE_KEYS)
    service = detached(ServiceRow, dict(zip(_SERVICE_KEYS, row[:split], strict=True)))
    device_values = dict(zip(_DEVICE_KEYS, row[split:SERVICE_AND_DEVICE_WIDTH], strict=True))
    device = None if device_values["id"] is None else detached(DeviceRow, device_values)
    if user is not None and (device is None or not Access.of_device(conn, user, device).sees(device, name)):
        return None
    return service, device


async def owned_device(store: JobStore, user: User, device_id: str) -> DeviceRow:
    """The device if ``user`` owns it (or is admin); 404 if they cannot see it, 403 if they only use it."""
    device = await store.device(device_id)
    if device is None or (device.deregistered_at is not None and not user.is_admin):
        raise Refusal(404, "not-found", f"no device {device_id!r}")
    if owns(user, device):
        return device
    access = await Access.load(store, user)
    async with store.reads() as s:
        names = list(await s.scalars(select(ServiceRow.name).where(ServiceRow.device_id == device_id)))
    if any(access.sees(device, name) for name in names or [ALL_SERVICES]):
        raise Refusal(403, "forbidden", f"only the owner of {device_id!r} or an admin may do this")
    raise Refusal(404, "not-found", f"no device {device_id!r}")


# ---------------------------------------------------------------------------------- shares


async def list_shares(store: JobStore, device_id: str) -> list[Share]:
    async with store.reads() as s:
        rows = await s.scalars(select(ShareRow).where(ShareRow.device_id == device_id).order_by(ShareRow.id))
        return [_share(r) for r in rows]


async def add_share(store: JobStore, device_id: str, service: str, kind: str, principal: str, by: str) -> Share:
    if kind not in PRINCIPAL_KINDS:
        raise Refusal(422, "bad-request", f"share with one of {', '.join(PRINCIPAL_KINDS)}", attribute="kind")
    if kind == "everyone":
        principal = EVERYONE
    elif not principal or principal == EVERYONE or len(principal) > 255:
        raise Refusal(422, "bad-request", f"name the {kind} to share with", attribute="principal")
    async with store.sessions.begin() as s:
        existing = await s.scalar(select(ShareRow).where(
            ShareRow.device_id == device_id, ShareRow.service_name == service, ShareRow.principal_kind == kind,
            ShareRow.principal == principal))
        if existing is not None:
            return _share(existing)
        row = ShareRow(device_id=device_id, service_name=service, principal_kind=kind, principal=principal,
                       created_by=by, created_at=time.time())
        s.add(row)
        await s.flush()
        return _share(row)


async def remove_share(store: JobStore, device_id: str, share_id: int) -> None:
    async with store.sessions.begin() as s:
        result = await s.execute(delete(ShareRow).where(ShareRow.device_id == device_id, ShareRow.id == share_id))
    if not result.rowcount:
        raise Refusal(404, "not-found", f"no share {share_id} on device {device_id!r}")


async def remove_all_shares(store: JobStore, device_id: str) -> None:
    async with store.sessions.begin() as s:
        await s.execute(delete(ShareRow).where(ShareRow.device_id == device_id))
