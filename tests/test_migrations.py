"""The schema is made and upgraded by Alembic (cloud_service/migrations), on SQLite and
PostgreSQL alike: a new database reaches the newest revision and matches the models exactly, a
database made before Alembic is adopted (stamped, or completed when older), a database of newer
software is refused, concurrent starts take turns, and the scripts ship inside the package."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud_service import migrations
from cloud_service.db import Base, create_schema, make_engine, schema_revision

baseline = importlib.import_module("cloud_service.migrations.versions.0001_baseline")


async def differences(engine: AsyncEngine) -> list:
    """What Alembic's autogenerate would change to make the database match the models."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata))


async def test_a_new_database_reaches_head_and_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert await schema_revision(engine) == (None, migrations.head())
        assert await create_schema(engine) == migrations.head()
        assert await create_schema(engine) == migrations.head()  # idempotent
        assert await differences(engine) == []
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'"))).scalar()
        assert version == "5"  # releases before Alembic refuse it
    finally:
        await engine.dispose()


async def test_a_schema_4_database_made_before_alembic_is_stamped_not_rebuilt(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:  # what create_schema made before Alembic
            await conn.run_sync(baseline.METADATA.create_all)
            await conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', '4')"))
            await conn.execute(text("INSERT INTO users (name, kind, role, groups, created_at, disabled) "
                                    "VALUES ('root', 'person', 'admin', '[]', :at, false)"), {"at": time.time()})
        assert await create_schema(engine) == migrations.head()
        assert await differences(engine) == []
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT name FROM users"))).scalars().all() == ["root"]
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() is not None
    finally:
        await engine.dispose()


async def test_a_database_of_newer_software_is_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        with pytest.raises(RuntimeError, match="newer than this software"):
            await create_schema(engine)
    finally:
        await engine.dispose()


async def test_replicas_starting_together_take_turns(pg_database: str) -> None:
    engines = [make_engine(pg_database) for _ in range(4)]
    try:
        revisions = await asyncio.gather(*(create_schema(engine) for engine in engines))
        assert set(revisions) == {migrations.head()}
        assert await differences(engines[0]) == []
    finally:
        for engine in engines:
            await engine.dispose()


def test_the_scripts_ship_in_the_package() -> None:
    from setuptools import find_packages

    root = Path(__file__).resolve().parents[1]
    packages = find_packages(str(root), include=["cloud_service*"])
    assert {"cloud_service.migrations", "cloud_service.migrations.versions"} <= set(packages)
    location = Path(migrations.config().get_main_option("script_location") or "")
    assert location == Path(migrations.__file__).parent and (location / "env.py").is_file()


def test_the_cli_upgrades_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from client.cli import main

    def run(action: str) -> tuple[int, str]:
        code = main(["service", "db", action, "--data-dir", str(tmp_path / "data")])
        return code, capsys.readouterr().out

    code, out = run("current")
    assert code == 1 and "revision none" in out, out
    code, out = run("upgrade")
    assert code == 0 and migrations.head() in out, out
    code, out = run("current")
    assert code == 0 and "up to date" in out, out
