"""Paid and limited printing: prices, quotas, balances, reports; retention at submit.

- A service may have a **price per impression** (in credits, an integer: no rounding) set by
  its device's owner. The price is copied onto each job when it is submitted, so a later
  change never re-prices old jobs.
- A service may have **quotas**: at most N impressions per user (one user, or ``*`` for each
  user) over the last D days (or ever).
- A user's **balance** is the sum of credits an admin granted minus the cost of their jobs.
- **Counting**: an ended job counts the impressions its device reported
  (``impressions_completed``); a job still under way counts the larger of what was reported
  and its estimate (schemas.model.pages.impressions: the pages page-ranges selects, number-up
  to a side, times copies), so parallel submissions cannot overdraw.
- **At submit** (create, then again at close once the document is in) a job that would
  exceed a quota or the balance is refused with 403 ``quota-exceeded`` or
  ``insufficient-balance`` and a message giving the numbers. A job refused at close ends
  ``aborted`` with that message. The check at close is made when a price or a quota applied
  at create; a quota an admin adds while a job's document is uploading applies from the
  next job (that job still counts against it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select

from cloud_service import retention as retention_rules
from cloud_service.auth import User
from cloud_service.config import ServiceConfig
from cloud_service.db import CreditRow, DeviceRow, DocumentRow, JobRow, QuotaRow, ServicePolicyRow, ServiceRow
from cloud_service.errors import Refusal
from cloud_service.prepared import Prepared
from cloud_service.sharing import SERVICE_AND_DEVICE, SERVICE_AND_DEVICE_WIDTH, usable_from
from cloud_service.store import JobStore, detached
from schemas.enums import JobState
from schemas.model.pages import impressions

TERMINAL = tuple(s.value for s in JobState if s.terminal)

_policies = ServicePolicyRow.__table__
_quotas = QuotaRow.__table__
_services = ServiceRow.__table__
_docs = DocumentRow.__table__
_SELECT_POLICY = select(_policies).where(_policies.c.device_id == bindparam("device_id"),
                                         _policies.c.service_name == bindparam("service"))
#: Run at every submit and close (the driver's cursor: cloud_service.prepared).
_POLICY = Prepared(_SELECT_POLICY)
_USER_QUOTAS = Prepared(select(_quotas).where(_quotas.c.device_id == bindparam("device_id"),
                                              _quotas.c.service_name == bindparam("service"),
                                              _quotas.c.user.in_([bindparam("user"), bindparam("everyone")])))
#: A submit's one read (``Admission.read_usable``): the service with its device
#: (cloud_service.sharing), its policy, and the user's own quota and the each-user one on it.
_QUOTA_OF_USER = _quotas.alias("quota_of_user")
_QUOTA_OF_EACH = _quotas.alias("quota_of_each")


def _of_service(table: Any) -> Any:
    return and_(table.c.device_id == _services.c.device_id, table.c.service_name == _services.c.name)


_USABLE_WITH_RULES = Prepared(
    SERVICE_AND_DEVICE.add_columns(_policies, _QUOTA_OF_USER, _QUOTA_OF_EACH)
    .outerjoin(_policies, _of_service(_policies))
    .outerjoin(_QUOTA_OF_USER, and_(_of_service(_QUOTA_OF_USER), _QUOTA_OF_USER.c.user == bindparam("user")))
    .outerjoin(_QUOTA_OF_EACH, and_(_of_service(_QUOTA_OF_EACH), _QUOTA_OF_EACH.c.user == bindparam("everyone"))))
_POLICY_KEYS = tuple(c.key for c in _policies.columns)
_QUOTA_KEYS = tuple(c.key for c in _quotas.columns)
_HAS_QUOTAS = select(func.count()).select_from(_quotas).where(_quotas.c.device_id == bindparam("device_id"),
                                                              _quotas.c.service_name == bindparam("service"))
_PAGES = select(_docs.c.pages).where(_docs.c.job_id == bindparam("job_id"))


@dataclass(frozen=True)
class Quota:
    user: str
    impression_limit: int
    period_days: float | None

    def json(self) -> dict[str, Any]:
        return {"user": self.user, "impression_limit": self.impression_limit, "period_days": self.period_days}


def job_impressions(row: JobRow) -> int:
    """What a job counts for: reported impressions, or its estimate while it is under way."""
    if row.state in TERMINAL:
        return row.impressions_completed or 0
    return max(row.impressions_completed or 0, row.impressions_estimated or 0)


def job_cost(row: JobRow) -> int:
    return job_impressions(row) * (row.price or 0)


async def policy(store: JobStore, device_id: str, service: str) -> ServicePolicyRow | None:
    async with store.reads() as s:
        return await s.get(ServicePolicyRow, (device_id, service))


async def set_policy(store: JobStore, device_id: str, service: str, by: str, **values: Any) -> ServicePolicyRow:
    """Create or update a service's policy; only the given fields change (None clears one)."""
    async with store.sessions.begin() as s:
        row = await s.get(ServicePolicyRow, (device_id, service))
        if row is None:
            row = ServicePolicyRow(device_id=device_id, service_name=service, updated_at=time.time(), updated_by=by)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = time.time()
        row.updated_by = by
    return row


async def quotas(store: JobStore, device_id: str, service: str) -> list[Quota]:
    async with store.reads() as s:
        rows = await s.scalars(select(QuotaRow).where(QuotaRow.device_id == device_id,
                                                      QuotaRow.service_name == service).order_by(QuotaRow.user))
        return [Quota(r.user, r.impression_limit, r.period_days) for r in rows]


async def set_quota(store: JobStore, device_id: str, service: str, user: str, limit: int | None,
                    period_days: float | None, by: str) -> None:
    """Set (or with ``limit=None`` remove) the quota of ``user`` ("*": each user)."""
    async with store.sessions.begin() as s:
        row = await s.scalar(select(QuotaRow).where(QuotaRow.device_id == device_id,
                                                    QuotaRow.service_name == service, QuotaRow.user == user))
        if limit is None:
            if row is not None:
                await s.delete(row)
            return
        if row is None:
            s.add(QuotaRow(device_id=device_id, service_name=service, user=user, impression_limit=limit,
                           period_days=period_days, updated_at=time.time(), updated_by=by))
        else:
            row.impression_limit, row.period_days = limit, period_days
            row.updated_at, row.updated_by = time.time(), by


async def add_credit(store: JobStore, user: str, amount: int, by: str, note: str | None = None) -> int:
    async with store.sessions.begin() as s:
        s.add(CreditRow(user=user, amount=amount, at=time.time(), by=by, note=note))
    return await balance(store, user)


async def balance(store: JobStore, user: str) -> int:
    """Credits granted minus the cost of every priced job of ``user``."""
    async with store.reads() as s:
        credited = await s.scalar(select(func.coalesce(func.sum(CreditRow.amount), 0)).where(CreditRow.user == user))
        priced = list(await s.scalars(select(JobRow).where(JobRow.owner == user, JobRow.price.is_not(None),
                                                           JobRow.price > 0)))
    return int(credited or 0) - sum(job_cost(r) for r in priced)


async def used(store: JobStore, user: str, device_id: str, service: str, since: float | None,
               exclude_job: int | None = None) -> int:
    query = select(JobRow).where(JobRow.owner == user, JobRow.device_id == device_id, JobRow.service_name == service)
    if since is not None:
        query = query.where(JobRow.created_at >= since)
    if exclude_job is not None:
        query = query.where(JobRow.id != exclude_job)
    async with store.reads() as s:
        return sum(job_impressions(r) for r in await s.scalars(query))


def _user_quotas(conn: Connection, user: User, service: ServiceRow) -> list[QuotaRow]:
    return [detached(QuotaRow, m) for m in _USER_QUOTAS.mappings(conn, {
        "device_id": service.device_id, "service": service.name, "user": user.name, "everyone": "*"})]


async def check(store: JobStore, user: User, service: ServiceRow, impressions: int, price: int | None,
                exclude_job: int | None = None, quota_rows: list[QuotaRow] | None = None) -> None:
    """Refuse (403) a job of ``impressions`` that would exceed a quota or the user's balance.
    ``quota_rows``: the user's quotas on the service, when the caller has read them already."""
    rows = quota_rows if quota_rows is not None else await store.read(lambda conn: _user_quotas(conn, user, service))
    # A user's own quota replaces the "each user" one.
    chosen = next((r for r in rows if r.user == user.name), None) or next(iter(rows), None)
    if chosen is not None:
        since = time.time() - chosen.period_days * 86400 if chosen.period_days else None
        so_far = await used(store, user.name, service.device_id, service.name, since, exclude_job)
        if so_far + impressions > chosen.impression_limit:
            period = f" in {chosen.period_days:g} days" if chosen.period_days else ""
            raise Refusal(403, "quota-exceeded",
                          f"quota exceeded: this job needs {impressions} impression(s); you have used {so_far} of "
                          f"your {chosen.impression_limit}{period} on {service.name!r}")
    if price:
        cost = impressions * price
        left = await balance(store, user.name)
        if exclude_job is not None:
            async with store.reads() as s:
                job = await s.get(JobRow, exclude_job)
            left += job_cost(job) if job is not None else 0
        if cost > left:
            raise Refusal(403, "insufficient-balance",
                          f"insufficient balance: this job costs {cost} credit(s) ({impressions} impression(s) at "
                          f"{price}); your balance is {left}")


async def report(store: JobStore, *, user: str | None = None, owner_of: str | None = None,
                 service: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """Impressions and cost per user and service. ``owner_of`` limits it to devices that
    user owns (a device owner's view of their printers)."""
    query = select(JobRow)
    if user is not None:
        query = query.where(JobRow.owner == user)
    if service is not None:
        query = query.where(JobRow.service_name == service)
    if since is not None:
        query = query.where(JobRow.created_at >= since)
    async with store.reads() as s:
        if owner_of is not None:
            owned = select(DeviceRow.id).where(DeviceRow.owner == owner_of)
            query = query.where(JobRow.device_id.in_(owned))
        rows = list(await s.scalars(query))
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault((row.owner, row.service_name), {
            "user": row.owner, "service": row.service_name, "device_id": row.device_id, "jobs": 0,
            "completed_jobs": 0, "impressions": 0, "cost": 0})
        entry["jobs"] += 1
        entry["completed_jobs"] += row.state == JobState.COMPLETED.value
        entry["impressions"] += row.impressions_completed or 0
        entry["cost"] += (row.impressions_completed or 0) * (row.price or 0)
    return [table[key] for key in sorted(table)]


#: What a job's admission decides on: the service's policy, the user's quotas on it.
Rules = tuple[ServicePolicyRow | None, list[QuotaRow]]


class Admission:
    """What the job operations ask when a job is created and closed: price, quota, retention."""

    def __init__(self, store: JobStore, config: ServiceConfig) -> None:
        self.store = store
        self.config = config

    def read_usable(self, conn: Connection, user: User, kind: str, name: str
                    ) -> tuple[tuple[ServiceRow, DeviceRow | None], Rules] | None:
        """The service ``kind``/``name`` ``user`` may use, with its device
        (``sharing.usable_in``), and what ``on_create`` decides on (as ``read``), in one
        statement: the submit's one read where three were made. None: no such service, or
        not one the user sees."""
        found = _USABLE_WITH_RULES.rows(conn, {"kind": kind, "name": name, "user": user.name, "everyone": "*"})
        usable = usable_from(conn, user, name, found[0]) if found else None
        if usable is None:
            return None
        rest = found[0][SERVICE_AND_DEVICE_WIDTH:]
        split = len(_POLICY_KEYS)
        policy = dict(zip(_POLICY_KEYS, rest[:split], strict=True))
        quotas = [detached(QuotaRow, dict(zip(_QUOTA_KEYS, part, strict=True)))
                  for part in (rest[split:split + len(_QUOTA_KEYS)], rest[split + len(_QUOTA_KEYS):])
                  if part[0] is not None]
        return usable, (detached(ServicePolicyRow, policy) if policy["device_id"] is not None else None, quotas)

    def read(self, conn: Connection, user: User, service: ServiceRow) -> Rules:
        """What ``on_create`` decides on (the service's policy, the user's quotas on it), read
        inside the caller's transaction: the hop that finds the service can bring it along."""
        found = _POLICY.mappings(conn, {"device_id": service.device_id, "service": service.name})
        return (detached(ServicePolicyRow, found[0]) if found else None), _user_quotas(conn, user, service)

    async def on_create(self, user: User, service: ServiceRow, ticket: dict[str, Any],
                        retention: dict[str, Any] | None, known: Any = None) -> tuple[dict[str, Any], bool]:
        """Column values for the new job, and whether ``on_close`` must check it again (a price
        or a quota of the user applies); refuses at once if even one page would not fit.
        ``known``: what ``read`` gave in the caller's transaction; else it is read in one hop."""
        rules, quota_rows = (known if known is not None
                             else await self.store.read(lambda conn: self.read(conn, user, service)))
        price = rules.price_per_impression if rules is not None else None
        copies = int(ticket.get("copies") or 1)
        await check(self.store, user, service, copies, price, quota_rows=quota_rows)
        values = {"price": price, "impressions_estimated": copies}
        values.update(retention_rules.columns(retention_rules.resolve(self.config, rules, retention)))
        return values, bool(price) or bool(quota_rows)

    async def on_create_scan(self, service: ServiceRow, retention: dict[str, Any] | None) -> dict[str, Any]:
        """A scan job's retention (as for print). Scan output exists to be downloaded after the
        job ends, so ``discard-after-processing`` keeps it for the duration instead."""
        rules = await policy(self.store, service.device_id, service.name)
        resolved = retention_rules.columns(retention_rules.resolve(self.config, rules, retention))
        if resolved.get("retention_documents") == "discard-after-processing":
            resolved["retention_documents"] = "after-duration"
            resolved["retention_seconds"] = self.config.document_retention_seconds
        return resolved

    async def on_close(self, user: User, row: JobRow, service: ServiceRow) -> None:
        """With the document in, estimate its impressions and check again (excluding this job).

        Pages were counted while the document was stored (cloud_service.documents); a document
        stored before pages were counted counts as one page. The ticket's page-ranges, number-up
        and copies apply per document (schemas.model.pages.impressions).
        """

        def work(conn: Connection) -> list[int | None] | None:
            has_rules = conn.execute(_HAS_QUOTAS, {"device_id": service.device_id, "service": service.name}).scalar()
            if not has_rules and not row.price:
                return None  # nothing to count against
            return list(conn.execute(_PAGES, {"job_id": row.id}).scalars())

        counted = await self.store.read(work)
        if counted is None:
            return
        estimate = sum(impressions(p or 1, row.ticket) for p in counted) or impressions(1, row.ticket)
        await self.store.set_impressions_estimated(row.id, estimate)
        await check(self.store, user, service, estimate, row.price, exclude_job=row.id)
