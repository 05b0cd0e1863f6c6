"""The schema as it stood when the service moved to Alembic (the last hand-numbered schema, 4).

Creates every table on an empty database. A database made by a release before Alembic with
schema 4 is stamped at this revision without running it (cloud_service.migrations); one with
an older schema (1-3) runs it: tables it lacks are created and columns it lacks are added
(every column added after a table first shipped is nullable, so old rows read as NULL).

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Frozen here: later revisions change the schema, never this description.
METADATA = sa.MetaData()

sa.Table(
    "credits", METADATA,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("user", sa.String(length=255), nullable=False),
    sa.Column("amount", sa.Integer(), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("by", sa.String(length=255), nullable=False),
    sa.Column("note", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "device_certificates", METADATA,
    sa.Column("serial", sa.String(length=48), nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("issued_at", sa.Float(), nullable=False),
    sa.Column("not_after", sa.Float(), nullable=False),
    sa.Column("revoked_at", sa.Float(), nullable=True),
    sa.Column("revoke_reason", sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint("serial"),
)
sa.Table(
    "devices", METADATA,
    sa.Column("id", sa.String(length=64), nullable=False),
    sa.Column("software", sa.String(length=255), nullable=True),
    sa.Column("online", sa.Boolean(), nullable=False),
    sa.Column("last_seen", sa.Float(), nullable=True),
    sa.Column("session", sa.String(length=64), nullable=True),
    sa.Column("status_re", sa.String(length=64), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("owner", sa.String(length=255), nullable=True),
    sa.Column("registered_at", sa.Float(), nullable=True),
    sa.Column("deregistered_at", sa.Float(), nullable=True),
    sa.Column("revoked_at", sa.Float(), nullable=True),
    sa.Column("auth", sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "enrollment_codes", METADATA,
    sa.Column("code_hash", sa.String(length=64), nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("created_by", sa.String(length=255), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.Column("used_at", sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint("code_hash"),
)
sa.Table(
    "meta", METADATA,
    sa.Column("key", sa.String(length=64), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("key"),
)
sa.Table(
    "quotas", METADATA,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("service_name", sa.String(length=64), nullable=False),
    sa.Column("user", sa.String(length=255), nullable=False),
    sa.Column("impression_limit", sa.Integer(), nullable=False),
    sa.Column("period_days", sa.Float(), nullable=True),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("updated_by", sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("device_id", "service_name", "user"),
)
sa.Table(
    "service_policies", METADATA,
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("service_name", sa.String(length=64), nullable=False),
    sa.Column("price_per_impression", sa.Integer(), nullable=True),
    sa.Column("document_retention", sa.String(length=32), nullable=True),
    sa.Column("document_retention_seconds", sa.Float(), nullable=True),
    sa.Column("history_retention_seconds", sa.Float(), nullable=True),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("updated_by", sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint("device_id", "service_name"),
)
sa.Table(
    "shares", METADATA,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("service_name", sa.String(length=64), nullable=False),
    sa.Column("principal_kind", sa.String(length=16), nullable=False),
    sa.Column("principal", sa.String(length=255), nullable=False),
    sa.Column("created_by", sa.String(length=255), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("device_id", "service_name", "principal_kind", "principal"),
)
sa.Table(
    "tokens", METADATA,
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("user", sa.String(length=255), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("label", sa.String(length=255), nullable=True),
    sa.Column("created_by", sa.String(length=255), nullable=True),
    sa.Column("expires_at", sa.Float(), nullable=True),
    sa.Column("revoked_at", sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint("token_hash"),
)
sa.Table(
    "user_defaults", METADATA,
    sa.Column("user", sa.String(length=255), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("service_name", sa.String(length=64), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint("user", "kind"),
)
sa.Table(
    "users", METADATA,
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("groups", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("created_by", sa.String(length=255), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint("name"),
)
sa.Table(
    "services", METADATA,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("state_reasons", sa.JSON(), nullable=False),
    sa.Column("state_message", sa.Text(), nullable=True),
    sa.Column("info", sa.Text(), nullable=True),
    sa.Column("location", sa.Text(), nullable=True),
    sa.Column("make_and_model", sa.Text(), nullable=True),
    sa.Column("capabilities", sa.JSON(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("kind", "name"),
)
sa.Table(
    "jobs", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
    sa.Column("uuid", sa.String(length=45), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("service_id", sa.Integer(), nullable=False),
    sa.Column("service_name", sa.String(length=64), nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("owner", sa.String(length=255), nullable=False),
    sa.Column("state", sa.String(length=24), nullable=False),
    sa.Column("state_reasons", sa.JSON(), nullable=False),
    sa.Column("state_message", sa.Text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("claimed", sa.Boolean(), nullable=False),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    sa.Column("started", sa.Boolean(), nullable=False),
    sa.Column("impressions_completed", sa.Integer(), nullable=False),
    sa.Column("ticket", sa.JSON(), nullable=False),
    sa.Column("applied_ids", sa.JSON(), nullable=False),
    sa.Column("claim_ts", sa.Float(), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("completed_at", sa.Float(), nullable=True),
    sa.Column("price", sa.Integer(), nullable=True),
    sa.Column("impressions_estimated", sa.Integer(), nullable=True),
    sa.Column("retention_documents", sa.String(length=32), nullable=True),
    sa.Column("retention_seconds", sa.Float(), nullable=True),
    sa.Column("history_seconds", sa.Float(), nullable=True),
    sa.Column("documents_discarded_at", sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("uuid"),
)
sa.Table(
    "documents", METADATA,
    sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=True),
    sa.Column("format", sa.String(length=255), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Column("sha256", sa.String(length=64), nullable=True),
    sa.Column("object_key", sa.String(length=255), nullable=False),
    sa.Column("state", sa.String(length=24), nullable=False),
    sa.Column("impressions_completed", sa.Integer(), nullable=False),
    sa.Column("pages", sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
    sa.PrimaryKeyConstraint("job_id", "number"),
)
sa.Table(
    "job_destinations", METADATA,
    sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("statuses", sa.JSON(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
    sa.PrimaryKeyConstraint("job_id"),
)
sa.Table(
    "job_events", METADATA,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("state", sa.String(length=24), nullable=False),
    sa.Column("state_reasons", sa.JSON(), nullable=False),
    sa.Column("message", sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
    sa.PrimaryKeyConstraint("id"),
)

#: Secondary indexes: (name, table, columns).
INDEXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ix_credits_user", "credits", ("user",)),
    ("ix_device_certificates_device_id", "device_certificates", ("device_id",)),
    ("ix_enrollment_codes_device_id", "enrollment_codes", ("device_id",)),
    ("ix_quotas_device_id", "quotas", ("device_id",)),
    ("ix_shares_device_id", "shares", ("device_id",)),
    ("ix_services_device_id", "services", ("device_id",)),
    ("ix_jobs_device_state", "jobs", ("device_id", "state",)),
    ("ix_jobs_owner", "jobs", ("owner",)),
    ("ix_jobs_service_id", "jobs", ("service_id",)),
    ("ix_job_events_job_id", "job_events", ("job_id",)),
)
for _name, _table, _columns in INDEXES:
    sa.Index(_name, *(METADATA.tables[_table].c[column] for column in _columns))


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in METADATA.sorted_tables:
        if table.name not in present:
            table.create(bind)
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                op.add_column(table.name, column._copy())
        indexed = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                op.create_index(index.name, table.name, [column.name for column in index.columns])
    # Releases before Alembic read meta.schema_version and refuse a number above their own (4).
    meta = METADATA.tables["meta"]
    bind.execute(meta.delete().where(meta.c.key == "schema_version"))
    bind.execute(meta.insert().values(key="schema_version", value="5"))


def downgrade() -> None:
    for table in reversed(METADATA.sorted_tables):
        op.drop_table(table.name)
