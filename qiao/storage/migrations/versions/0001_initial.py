"""Initial schema: teams, virtual keys, provider secrets, usage, spend, audit, change counter.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen: later changes go in new revisions, never here. Money is NUMERIC(38, 9) on PostgreSQL
and integer nano-units on SQLite; datetimes are UTC (see ``qiao.storage.schema``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Money = sa.Numeric(38, 9).with_variant(sa.BigInteger(), "sqlite")
Time = sa.DateTime(timezone=True)
Id = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("limits", Json, nullable=False),
        sa.Column("budget", Json, nullable=True),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "virtual_keys",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(64), nullable=False),
        sa.Column("hint", sa.String(64), nullable=False),
        sa.Column("team_id", Id, nullable=True),
        sa.Column("models", Json, nullable=False),
        sa.Column("cidrs", Json, nullable=False),
        sa.Column("expires_at", Time, nullable=True),
        sa.Column("revoked_at", Time, nullable=True),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("limits", Json, nullable=False),
        sa.Column("model_limits", Json, nullable=False),
        sa.Column("budget", Json, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    op.create_index("ix_virtual_keys_key_hash", "virtual_keys", ["key_hash"], unique=True)
    op.create_index("ix_virtual_keys_team_id", "virtual_keys", ["team_id"])
    op.create_table(
        "provider_secrets",
        sa.Column("name", Id, primary_key=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(64), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("hint", sa.String(64), nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    _usage()
    op.create_table(
        "spend",
        sa.Column("scope", Id, primary_key=True),
        sa.Column("period_start", Time, primary_key=True),
        sa.Column("amount", Money, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.Column("at", Time, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    _changes()


def _usage() -> None:
    op.create_table(
        "usage",
        sa.Column("attempt_id", Id, primary_key=True),
        sa.Column("request_id", Id, nullable=False),
        sa.Column("key_id", Id, nullable=True),
        sa.Column("team_id", Id, nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
    )
    op.create_index("ix_usage_started_at", "usage", ["started_at"])
    op.create_index("ix_usage_key_id_started_at", "usage", ["key_id", "started_at"])
    op.create_index("ix_usage_team_id_started_at", "usage", ["team_id", "started_at"])
    op.create_index("ix_usage_request_id", "usage", ["request_id"])


def _changes() -> None:
    op.create_table(
        "changes",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("entity_id", Id, primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_changes_version", "changes", ["version"])
    counter = op.create_table(
        "change_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "version": 0}])


def downgrade() -> None:
    for table in ("change_version", "changes", "audit", "spend", "usage"):
        op.drop_table(table)
    for table in ("provider_secrets", "virtual_keys", "teams"):
        op.drop_table(table)
