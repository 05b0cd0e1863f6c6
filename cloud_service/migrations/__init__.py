"""Schema migrations (Alembic): every change to the database's tables is a revision here.

The service upgrades its database to the newest revision at start-up (``create_schema``), and an
operator can do it beforehand (``cloudimaging service db upgrade``). The scripts ship inside the
package, so a pip-installed service finds them. A database made before Alembic (it has the
``meta`` table but no ``alembic_version``) is adopted: one at schema 4, identical to the first
revision, is stamped; an older one runs the first revision, which completes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

#: The revision equal to the last schema made without Alembic.
BASELINE = "0001"
#: That schema's number in ``meta.schema_version``.
LEGACY_SCHEMA = 4


def config(connection: Connection | None = None, metadata: MetaData | None = None) -> Config:
    """An Alembic configuration on this package's scripts (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = metadata
    return cfg


def head() -> str:
    """The newest revision this software knows."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The revision the database is at; None before any (empty or pre-Alembic)."""
    return MigrationContext.configure(connection).get_current_revision()


def _legacy_schema(connection: Connection) -> int | None:
    """``meta.schema_version`` of a database made before Alembic, else None."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or "meta" not in tables:
        return None
    value = connection.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    return int(value) if value is not None else None


def upgrade(connection: Connection, metadata: MetaData | None = None) -> str:
    """Bring the database to the newest revision on ``connection`` (in its transaction);
    returns it. Refuses a database written by newer software."""
    cfg = config(connection, metadata)
    scripts = ScriptDirectory.from_config(cfg)
    legacy = _legacy_schema(connection)
    if legacy is not None and legacy > LEGACY_SCHEMA:
        raise RuntimeError(f"database schema {legacy} is newer than this software and not managed by Alembic")
    if legacy == LEGACY_SCHEMA:
        command.stamp(cfg, BASELINE)
    at = current(connection)
    if at is not None and at not in {script.revision for script in scripts.walk_revisions()}:
        raise RuntimeError(f"database revision {at} is newer than this software (head {scripts.get_current_head()})")
    command.upgrade(cfg, "head")
    return head()


def history() -> list[dict[str, Any]]:
    """The revisions this software knows, oldest first."""
    scripts = ScriptDirectory.from_config(config())
    return [{"revision": s.revision, "down_revision": s.down_revision, "doc": s.doc}
            for s in reversed(list(scripts.walk_revisions()))]
