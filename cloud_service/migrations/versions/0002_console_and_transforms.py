"""The web console's sign-in (passwords and sessions) and the transformed copy of a document.

- ``user_passwords``: one Argon2id hash per user (cloud_service/passwords.py);
- ``console_sessions``: the console's sessions, stored by the SHA-256 of the cookie
  (cloud_service/sessions.py);
- ``documents.transformed``: where the copy made for the device lives and in which format
  (cloud_service/documents.py), NULL when the device takes the document as it is.

Each step checks what is there first, so a database that already has a table or the column
(made by a development build) is completed rather than refused.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "user_passwords" not in tables:
        op.create_table(
            "user_passwords",
            sa.Column("user", sa.String(length=255), nullable=False),
            sa.Column("hash", sa.String(length=255), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.Column("updated_by", sa.String(length=255), nullable=False),
            sa.PrimaryKeyConstraint("user"),
        )
    if "console_sessions" not in tables:
        op.create_table(
            "console_sessions",
            sa.Column("id_hash", sa.String(length=64), nullable=False),
            sa.Column("user", sa.String(length=255), nullable=False),
            sa.Column("csrf", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("last_used", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.Column("client", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id_hash"),
        )
        op.create_index("ix_console_sessions_user", "console_sessions", ["user"])
    if "transformed" not in {c["name"] for c in inspector.get_columns("documents")}:
        op.add_column("documents", sa.Column("transformed", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("documents", "transformed")
    op.drop_index("ix_console_sessions_user", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("user_passwords")
