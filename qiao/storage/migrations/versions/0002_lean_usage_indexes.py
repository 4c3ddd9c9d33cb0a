"""Leaner usage indexes: every usage row is written on the request path, and each index is one
more B-tree insert per row (SQLite: ~15 % of the row's cost each).

Dropped: ``ix_usage_request_id`` (an attempt id is ``<request id>.<n>``, so the attempts of a
request are a range scan of the primary key: ``attempt_id >= 'ID.' AND attempt_id < 'ID/'``)
and ``ix_usage_team_id_started_at`` (no query filters usage by team; a team's spend is kept in
``spend``). Kept: ``started_at`` (time ranges, retention) and ``(key_id, started_at)``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_usage_request_id", table_name="usage")
    op.drop_index("ix_usage_team_id_started_at", table_name="usage")


def downgrade() -> None:
    op.create_index("ix_usage_team_id_started_at", "usage", ["team_id", "started_at"])
    op.create_index("ix_usage_request_id", "usage", ["request_id"])
