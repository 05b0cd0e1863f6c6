"""Console sessions: what a sign-in turns a password into, held in a cookie.

The cookie holds a random session id (256 bits); the database keeps only its SHA-256, as for
tokens, so a leaked database opens no session. Each session carries its own CSRF token, which
the page reads from ``GET /api/v1/session`` and sends back in ``X-CSRF-Token`` on every request
that changes something: a cross-site form or script can send the cookie but cannot read the
token (no CORS), so it cannot forge one. A session ends when signed out, when it expires
(``SESSION_TTL`` after sign-in, or ``IDLE_TTL`` after its last use), when the user's password
changes, or when the user is disabled; its user and role are read afresh on every request,
exactly as for a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Float, String, delete
from sqlalchemy.orm import Mapped, mapped_column

from cloud_service.auth import User
from cloud_service.db import Base, UserRow
from cloud_service.store import JobStore

COOKIE = "ci_session"
CSRF_HEADER = "x-csrf-token"
#: A session lasts at most this long after sign-in...
SESSION_TTL = 12 * 3600.0
#: ...and ends after this long unused.
IDLE_TTL = 2 * 3600.0
#: ``last_used`` is written at most this often (a read per request, not a write).
TOUCH_EVERY = 60.0


class SessionRow(Base):
    """A signed-in console session, keyed by the SHA-256 of the id in the cookie."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_used: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)


@dataclass(frozen=True)
class Session:
    """A live session: who, and the CSRF token its changing requests must carry."""

    user: User
    csrf: str
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), (presented or "").encode())


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def open_session(store: JobStore, user: str, client: str | None, now: float | None = None) -> tuple[str, str]:
    """A new session for ``user``: (the id for the cookie, the CSRF token)."""
    now = time.time() if now is None else now
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with store.sessions.begin() as s:
        await s.execute(delete(SessionRow).where(SessionRow.expires_at <= now))  # sweep the dead ones
        s.add(SessionRow(id_hash=_hash(session_id), user=user, csrf=csrf, created_at=now, last_used=now,
                         expires_at=now + SESSION_TTL, client=(client or "")[:64] or None))
    return session_id, csrf


async def find_session(store: JobStore, session_id: str | None, now: float | None = None) -> Session | None:
    """The live session of a cookie's id, with its user as they are now; None if there is none
    (unknown, expired, idle too long, the user gone or disabled)."""
    if not session_id or len(session_id) > 100:
        return None
    now = time.time() if now is None else now
    async with store.reads() as s:
        row = await s.get(SessionRow, _hash(session_id))
        if row is None or row.expires_at <= now or row.last_used + IDLE_TTL <= now:
            return None
        user = await s.get(UserRow, row.user)
    if user is None or user.disabled:
        return None
    if now - row.last_used > TOUCH_EVERY:
        async with store.sessions.begin() as s:
            fresh = await s.get(SessionRow, row.id_hash)
            if fresh is not None:
                fresh.last_used = now
    return Session(User(user.name, user.role, tuple(user.groups or ()), user.kind), row.csrf, row.expires_at)


async def close_session(store: JobStore, session_id: str | None) -> bool:
    if not session_id:
        return False
    async with store.sessions.begin() as s:
        result = await s.execute(delete(SessionRow).where(SessionRow.id_hash == _hash(session_id)))
        return bool(result.rowcount)


async def close_user_sessions(store: JobStore, user: str) -> int:
    """End every session of ``user`` (password changed, user disabled)."""
    async with store.sessions.begin() as s:
        result = await s.execute(delete(SessionRow).where(SessionRow.user == user))
        return int(result.rowcount or 0)

