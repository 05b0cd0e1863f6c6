"""The service instance id: a random name made once with the database and stored in it.

Job ids are unique only within one database. Devices hold jobs by id across restarts, so they
must be able to tell a new or swapped database from the one they worked for: the id is sent in
every ``sync`` (schemas.messages.Sync.instance). A backup restored keeps the id of the database
it was taken from (docs/reliability.md, "A database is an identity").
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cloud_service.db import Meta

KEY = "instance_id"


async def database_instance(engine: AsyncEngine) -> str:
    """The database's instance id, made on first use; replicas starting together agree (the
    first insert wins, the others read it)."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    for _ in range(3):
        async with sessions() as session:
            row = await session.get(Meta, KEY)
            if row is not None:
                return row.value
            session.add(Meta(key=KEY, value=secrets.token_hex(16)))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another replica made it first: read theirs
                continue
    async with sessions() as session:
        row = await session.get(Meta, KEY)
        if row is None:
            raise RuntimeError("could not create the service instance id")
        return row.value
