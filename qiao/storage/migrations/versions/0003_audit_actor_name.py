"""The audit log's actor is a key id (key names are not unique); ``actor_name`` keeps the name
the actor had when it acted, for people reading the log. Rows written before this revision
hold a name in ``actor`` and null here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit", sa.Column("actor_name", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("actor_name")
