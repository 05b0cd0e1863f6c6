"""Alembic's environment: migrations run on the connection the service hands over.

The service (cloud_service.db.create_schema, ``cloudimaging service db``) opens the connection,
takes the migration lock on it and passes it in ``config.attributes``; there is no URL here and
no offline mode, so the same code path runs at start-up, from the CLI and in tests.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through cloud_service.db (create_schema or `cloudimaging service db`)")
context.configure(connection=connection, target_metadata=context.config.attributes.get("target_metadata"),
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
