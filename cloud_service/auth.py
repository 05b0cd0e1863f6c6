"""API tokens: random, shown once, stored as SHA-256 (a leaked database leaks no token)."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select

from cloud_service.db import TokenRow
from cloud_service.jobs import User
from cloud_service.store import JobStore

ROLES = ("admin", "owner", "user")
TOKEN_PREFIX = "ci_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(store: JobStore, user: str, role: str = "user") -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with store.sessions.begin() as s:
        s.add(TokenRow(token_hash=token_hash(token), user=user, role=role, created_at=time.time()))
    return token


async def authenticate(store: JobStore, token: str) -> User | None:
    if not token or len(token) > 200:
        return None
    async with store.sessions() as s:
        row = await s.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash(token)))
    return User(row.user, row.role) if row else None
