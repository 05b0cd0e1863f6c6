"""The supplies (printer markers) a device reports with a service's attributes.

- ``services.supplies``: the list of schemas.supplies.Supply as JSON, NULL for a service whose
  device never reported any (rows made before this revision, older Managers).

Checks what is there first, like 0002, so a database that already has the column is completed
rather than refused.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "supplies" not in {c["name"] for c in inspector.get_columns("services")}:
        op.add_column("services", sa.Column("supplies", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("services", "supplies")
