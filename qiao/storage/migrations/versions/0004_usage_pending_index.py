"""A partial index on the attempts still pending, for the sweeper that marks attempts whose
process died (journal and all) as ``interrupted``: it finds them without scanning the history.

Only in-flight attempts are in it (a settled row leaves it; most rows are written settled and
never enter it), so it stays small and costs the request path next to nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_usage_pending",
        "usage",
        ["started_at"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_usage_pending", table_name="usage")
