"""Device registration, enrollment and revocation (PWG Cloud Imaging Model: device registration).

1. An owner (or admin) registers a device id and gets a one-time enrollment code, valid for
   ``enrollment_ttl`` (15 minutes by default), stored only as its SHA-256.
2. On the device, ``cloudimaging manager enroll CODE`` makes a key and a CSR and posts them
   with the code to ``POST /api/v1/enroll`` over HTTPS. The code is burnt atomically (a second
   use fails even if both race), the CA signs a certificate whose CN and URI SAN name the
   device, and older certificates of the device are revoked ("superseded"). The owner,
   shares and jobs stay: re-enrolling keeps the identity.
3. The broker authenticates the device by that certificate and confines it to its topics.
4. Revocation (or deregistration, which also drops the registration and its shares) revokes
   every certificate of the device in the CA's CRL, removes its broker password, makes the
   broker close its connection now, and ends its unfinished jobs with a reason.

How the broker learns of a revocation: the embedded broker watches the CRL and the password
file and closes affected connections within a fraction of a second, in or out of process.
Mosquitto rereads both on SIGHUP (``broker_reload_command``) but keeps live connections, so
the service also takes the device's connection over: it connects to the mTLS listener once
with a throw-away certificate for that device id (key in memory, valid two minutes, revoked
right after); Mosquitto closes the older connection with the same client id. The connection
itself is made by cloud_service.mqtt (``take_over_session``), given to the ``Registry``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update

from broker.credentials import shared_store
from broker.pki import Pki, crl_needs_renewal, issue_device_cert, write_crl
from cloud_service.audit import AuditLog
from cloud_service.auth import User
from cloud_service.clock import Clock
from cloud_service.config import ServiceConfig
from cloud_service.db import DeviceCertificateRow, DeviceRow, EnrollmentCodeRow, JobRow, ServiceRow
from cloud_service.errors import Refusal
from cloud_service.sharing import owned_device, remove_all_shares
from cloud_service.store import JobStore
from schemas import topics
from schemas.enums import JobState, Reason
from schemas.model.job import Abort, InvalidTransition

log = logging.getLogger("cloudimaging.registration")

#: ``take_over_session(device_id, certificate, private_key)``: connect as the device once, so
#: Mosquitto drops its older connection (cloud_service.mqtt.take_over_session).
TakeOver = Callable[[str, x509.Certificate, ec.EllipticCurvePrivateKey], None]

CODE_BYTES = 20  # 160 bits, shown as 8 groups of 4 base32 characters

#: Device ids are global, so registering one that is taken must be refused, and the refusal
#: tells the caller the id exists. One answer covers every "taken" case (registered to someone
#: else, or known but unregistered), and a user gets at most this many such refusals per window;
#: after that every registration of that user is answered 429 until the window moves on, so the
#: refusal cannot be used to enumerate the device ids of other users.
REFUSED_REGISTRATIONS = 5
REFUSED_REGISTRATION_WINDOW = 600.0


class EnrollRefused(Refusal):
    """The code is unknown, expired or used: 401, and a security event."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "enrollment-refused", message)


def new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode().rstrip("=")
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def normalize_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


@dataclass(frozen=True)
class RevokeResult:
    device_id: str
    certificates_revoked: int
    jobs_ended: list[int]
    disconnected: bool

    def json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "certificates_revoked": self.certificates_revoked,
                "jobs_ended": self.jobs_ended, "disconnected": self.disconnected}


class Registry:
    """Registration, enrollment and revocation over the store, the CA and the broker."""

    def __init__(self, store: JobStore, config: ServiceConfig, audit: AuditLog, clock: Clock,
                 service_url: str, take_over_session: TakeOver) -> None:
        self.store = store
        #: Connects to the broker once as the device (blocking; run in a thread).
        self.take_over_session = take_over_session
        self.config = config
        self.audit = audit
        self.clock = clock
        self.service_url = service_url
        ca_dir = config.ca_dir
        self.pki = Pki(ca_dir / "ca.pem", ca_dir / "ca.key", ca_dir / "server.pem", ca_dir / "server.key")
        self._crl_lock = asyncio.Lock()
        #: Per user, when their recent "taken" refusals happened (this replica's memory).
        self._taken_refusals: dict[str, list[float]] = {}

    @property
    def can_enroll(self) -> bool:
        return self.pki.ca_cert.exists() and self.pki.ca_key.exists()

    @property
    def device_broker_url(self) -> str:
        return self.config.device_broker_url or self.config.broker_url

    async def start(self) -> None:
        """Make sure a current CRL exists (Mosquitto refuses to start without its crlfile)."""
        if self.can_enroll and await asyncio.to_thread(crl_needs_renewal, self.pki):
            await self.publish_crl(reload=False)

    # ------------------------------------------------------------------ registration

    async def register(self, user: User, device_id: str, owner: str | None = None) -> tuple[DeviceRow, str, float]:
        """Register ``device_id`` for ``owner`` (default: the caller) and issue its first code."""
        if not user.may_register_devices:
            raise Refusal(403, "forbidden", "registering devices needs the owner or admin role")
        if not topics.valid_device_id(device_id):
            raise Refusal(422, "bad-request", "device ids are lowercase letters, digits and '-' (at most 64)",
                          attribute="device_id")
        if owner is not None and owner != user.name and not user.is_admin:
            raise Refusal(403, "forbidden", "only an admin registers devices for someone else")
        owner = owner or user.name

        self._check_refusal_budget(user, device_id)

        def may_register(row: DeviceRow | None) -> None:
            if row is None or row.deregistered_at is not None:
                return  # new, or deregistered (its old shares are gone): registered afresh
            # Known from a password login before registration existed (an admin's to claim), or
            # registered to someone else: the same answer, so the two cannot be told apart.
            if (row.owner is None and not user.is_admin) or (row.owner is not None and row.owner != owner):
                raise Refusal(409, "exists", f"device id {device_id!r} is not available; choose another "
                                             "or ask an admin")

        try:
            await self.store.set_device(device_id, check=may_register, owner=owner,
                                        registered_at=self.clock.now(), deregistered_at=None)
        except Refusal as exc:
            if exc.code == "exists":
                self._taken_refusals.setdefault(user.name, []).append(self.clock.now())
                self.audit.event("device-register-refused", outcome="denied", actor=user.name, device=device_id,
                                 reason="device id taken")
            raise
        self.audit.event("device-registered", actor=user.name, device=device_id, owner=owner)
        code, expires = await self.issue_code(user, device_id, check=False)
        return await self._device(device_id), code, expires

    def _check_refusal_budget(self, user: User, device_id: str) -> None:
        """429 while ``user`` has had REFUSED_REGISTRATIONS "taken" refusals in the window."""
        now = self.clock.now()
        recent = [t for t in self._taken_refusals.get(user.name, []) if now - t < REFUSED_REGISTRATION_WINDOW]
        if recent:
            self._taken_refusals[user.name] = recent
        else:
            self._taken_refusals.pop(user.name, None)
        if len(recent) >= REFUSED_REGISTRATIONS:
            self.audit.event("device-register-refused", outcome="denied", actor=user.name, device=device_id,
                             reason="too many refused registrations")
            raise Refusal(429, "too-many-requests", "too many refused registrations; try again later")

    async def issue_code(self, user: User, device_id: str, check: bool = True) -> tuple[str, float]:
        """A new one-time code for (re-)enrolling; earlier unused codes of the device die."""
        if check:
            await owned_device(self.store, user, device_id)
        if not self.can_enroll:
            raise Refusal(503, "enrollment-unavailable", "this service has no CA key to sign device certificates")
        code = new_code()
        now = self.clock.now()
        expires = now + self.config.enrollment_ttl
        async with self.store.sessions.begin() as s:
            await s.execute(update(EnrollmentCodeRow).where(EnrollmentCodeRow.device_id == device_id,
                                                            EnrollmentCodeRow.used_at.is_(None))
                            .values(used_at=now))
            s.add(EnrollmentCodeRow(code_hash=code_hash(code), device_id=device_id, created_by=user.name,
                                    created_at=now, expires_at=expires))
        self.audit.event("enrollment-code-issued", actor=user.name, device=device_id, expires_at=expires)
        return code, expires

    # ------------------------------------------------------------------ enrollment

    async def enroll(self, code: str, csr_pem: str, client: str | None) -> dict[str, Any]:
        """Burn the code, sign the CSR, supersede older certificates; the enrollment answer."""
        hashed = code_hash(code or "")
        now = self.clock.now()
        async with self.store.sessions.begin() as s:
            row = await s.get(EnrollmentCodeRow, hashed)
            why = None
            if row is None:
                why = "unknown enrollment code"
            elif row.used_at is not None:
                why = "this enrollment code was used already (codes work once)"
            elif row.expires_at <= now:
                why = "this enrollment code has expired; ask the owner for a new one"
            else:
                burnt = await s.execute(update(EnrollmentCodeRow).where(EnrollmentCodeRow.code_hash == hashed,
                                                                        EnrollmentCodeRow.used_at.is_(None))
                                        .values(used_at=now))
                if burnt.rowcount != 1:
                    why = "this enrollment code was used already (codes work once)"
            device_id = row.device_id if row is not None else None
        if why is not None:
            self.audit.event("enrollment-refused", outcome="denied", client=client, device=device_id, reason=why)
            raise EnrollRefused(why)
        assert device_id is not None
        device = await self.store.device(device_id)
        if device is None or device.deregistered_at is not None:
            self.audit.event("enrollment-refused", outcome="denied", client=client, device=device_id,
                             reason="device deregistered")
            raise EnrollRefused("the device was deregistered")
        try:
            cert = await asyncio.to_thread(issue_device_cert, self.pki, csr_pem.encode(), device_id)
        except ValueError as exc:
            self.audit.event("enrollment-refused", outcome="denied", client=client, device=device_id,
                             reason=f"bad CSR: {exc}")
            raise Refusal(400, "bad-csr", f"the CSR cannot be used: {exc}") from None
        serial = format(cert.serial_number, "x")
        async with self.store.sessions.begin() as s:
            superseded = await s.execute(update(DeviceCertificateRow).where(
                DeviceCertificateRow.device_id == device_id, DeviceCertificateRow.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason="superseded"))
            s.add(DeviceCertificateRow(serial=serial, device_id=device_id, issued_at=now,
                                       not_after=cert.not_valid_after_utc.timestamp()))
        await self.store.set_device(device_id, auth="certificate", revoked_at=None)
        # From now on the certificate is the device's only credential: a broker password it
        # may have had (from before enrollment) is removed, and older certificates revoked.
        removed_password = await asyncio.to_thread(self._remove_password, device_id)
        if superseded.rowcount:
            await self.publish_crl()
        elif removed_password:
            await self._reload_broker()
        self.audit.event("device-enrolled", client=client, device=device_id, serial=serial,
                         superseded=int(superseded.rowcount or 0))
        return {"device_id": device_id,
                "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
                "ca_certificate": self._trust_bundle(),
                "broker_url": self.device_broker_url, "service_url": self.service_url,
                "expires_at": cert.not_valid_after_utc.timestamp()}

    def _trust_bundle(self) -> str:
        """What the device should trust: the service's configured CA file (it verifies the
        broker), plus the device CA when that is a different file."""
        files = [self.config.ca_file] if self.config.ca_file else []
        if self.pki.ca_cert not in files:
            files.append(self.pki.ca_cert)
        return "".join(Path(f).read_text() for f in files if f and Path(f).exists())

    # ------------------------------------------------------------------ revocation

    async def revoke(self, user: User, device_id: str, reason: str = "revoked", deregister: bool = False,
                     client: str | None = None) -> RevokeResult:
        """Revoke every credential of the device, disconnect it, end its unfinished jobs."""
        device = await owned_device(self.store, user, device_id)
        now = self.clock.now()
        async with self.store.sessions.begin() as s:
            revoked = await s.execute(update(DeviceCertificateRow).where(
                DeviceCertificateRow.device_id == device_id, DeviceCertificateRow.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason=reason[:64]))
            await s.execute(update(EnrollmentCodeRow).where(EnrollmentCodeRow.device_id == device_id,
                                                            EnrollmentCodeRow.used_at.is_(None))
                            .values(used_at=now))
        values: dict[str, Any] = {"revoked_at": now}
        if deregister:
            values["deregistered_at"] = now
        await self.store.set_device(device_id, **values)
        if deregister:
            await remove_all_shares(self.store, device_id)
        removed_password = await asyncio.to_thread(self._remove_password, device_id)
        await self.publish_crl(reload=True)
        if self.config.broker_kind == "mosquitto":
            if device.auth == "certificate":
                await self._take_over(device_id)
            # Mosquitto drops a password client whose password went away at the reload, but
            # publishes no Last Will then: the service records the device offline itself.
            await self.store.set_device(device_id, online=False, last_seen=self.clock.now())
        ended = await self._end_jobs(device_id, f"the device was {'deregistered' if deregister else 'revoked'} "
                                                f"by {user.name}")
        disconnected = await self._wait_offline(device_id)
        self.audit.event("device-deregistered" if deregister else "device-revoked", actor=user.name, client=client,
                         device=device_id, certificates=int(revoked.rowcount or 0), password_removed=removed_password,
                         jobs_ended=len(ended), disconnected=disconnected, reason=reason)
        return RevokeResult(device_id, int(revoked.rowcount or 0), ended, disconnected)

    def _remove_password(self, device_id: str) -> bool:
        if self.config.broker_password_file is None:
            return False
        return shared_store(self.config.broker_password_file).remove(device_id)

    async def publish_crl(self, reload: bool = True, extra: tuple[tuple[int, dt.datetime], ...] = ()) -> None:
        """Rewrite the CRL from the database (plus ``extra`` entries) and tell the broker."""
        if not self.can_enroll:
            if reload:
                await self._reload_broker()
            return
        horizon = self.clock.now() - 86400  # expired certificates no longer need listing
        async with self.store.reads() as s:
            rows = list(await s.scalars(select(DeviceCertificateRow).where(
                DeviceCertificateRow.revoked_at.is_not(None), DeviceCertificateRow.not_after > horizon)))
        entries = [(int(r.serial, 16), dt.datetime.fromtimestamp(r.revoked_at or 0, dt.UTC)) for r in rows]
        async with self._crl_lock:
            await asyncio.to_thread(write_crl, self.pki, [*entries, *extra])
        if reload:
            await self._reload_broker()

    async def _reload_broker(self) -> None:
        command = self.config.broker_reload_command
        if not command:
            return
        try:
            proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            if proc.returncode:
                log.error("broker reload command failed (%s): %s", proc.returncode, err.decode(errors="replace")[:500])
        except (OSError, TimeoutError) as exc:
            log.error("broker reload command failed: %s", exc)

    async def _take_over(self, device_id: str) -> None:
        """Close a Mosquitto connection of ``device_id`` by connecting as it (see module doc)."""
        if not self.can_enroll:
            return
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        cert = await asyncio.to_thread(issue_device_cert, self.pki, csr, device_id, dt.timedelta(minutes=2))
        try:
            await asyncio.to_thread(self.take_over_session, device_id, cert, key)
        finally:
            # The throw-away certificate is revoked at once as well.
            await self.publish_crl(reload=True, extra=((cert.serial_number, dt.datetime.now(dt.UTC)),))

    async def _end_jobs(self, device_id: str, message: str) -> list[int]:
        terminal = [s.value for s in JobState if s.terminal]
        async with self.store.reads() as s:
            ids = list(await s.scalars(select(JobRow.id).where(JobRow.device_id == device_id,
                                                               JobRow.state.not_in(terminal))))
        ended = []
        for job_id in ids:
            try:
                await self.store.transition(job_id, Abort(Reason.ABORTED_BY_SYSTEM, message))
                ended.append(job_id)
            except InvalidTransition:
                continue
        return ended

    async def _wait_offline(self, device_id: str) -> bool:
        deadline = time.monotonic() + self.config.revoke_wait
        while True:
            device = await self.store.device(device_id)
            if device is None or not device.online:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ reading

    async def _device(self, device_id: str) -> DeviceRow:
        device = await self.store.device(device_id)
        assert device is not None
        return device

    async def describe(self, device: DeviceRow) -> dict[str, Any]:
        async with self.store.reads() as s:
            services = list(await s.scalars(select(ServiceRow.name).where(ServiceRow.device_id == device.id)
                                            .order_by(ServiceRow.name)))
            certs = list(await s.scalars(select(DeviceCertificateRow).where(
                DeviceCertificateRow.device_id == device.id).order_by(DeviceCertificateRow.issued_at)))
        return {"id": device.id, "owner": device.owner, "registered_at": device.registered_at,
                "deregistered_at": device.deregistered_at, "revoked_at": device.revoked_at,
                "auth": device.auth or "password", "online": bool(device.online), "last_seen": device.last_seen,
                "software": device.software, "services": services,
                "certificates": [{"serial": c.serial, "issued_at": c.issued_at, "not_after": c.not_after,
                                  "revoked_at": c.revoked_at, "revoke_reason": c.revoke_reason} for c in certs]}

    async def devices_for(self, user: User) -> list[DeviceRow]:
        query = select(DeviceRow).order_by(DeviceRow.id)
        if not user.is_admin:
            query = query.where(DeviceRow.owner == user.name, DeviceRow.deregistered_at.is_(None))
        async with self.store.reads() as s:
            return list(await s.scalars(query))
