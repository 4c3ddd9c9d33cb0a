"""The SQL tables (SQLAlchemy Core) and the column types that keep values exact across dialects.

``Money`` is NUMERIC(38, 9) on PostgreSQL and an integer count of nano-units on SQLite (whose
NUMERIC is a float), so sums done inside the database are exact on both. ``UtcDateTime`` is
``timestamptz`` on PostgreSQL and naive-UTC text on SQLite; both come back as aware UTC.

The migrations in ``migrations/versions`` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from .codec import MONEY_PLACES, money, sqlite_money, utc

__all__ = [
    "PENDING",
    "Money",
    "UtcDateTime",
    "audit",
    "change_version",
    "changes",
    "metadata",
    "provider_secrets",
    "spend",
    "teams",
    "usage",
    "virtual_keys",
]


class Money(TypeDecorator[Decimal]):
    impl = Numeric(38, MONEY_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(38, MONEY_PLACES))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return sqlite_money(value) if dialect.name == "sqlite" else money(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES)
        return money(Decimal(value))


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        # SQLite keeps text: store naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


Json = JSON().with_variant(JSONB(), "postgresql")
# The rows of attempts still open, for the sweeper: a partial index, so it holds only the
# attempts in flight (a settled row leaves it) and most rows, settled within one flush of the
# usage writer, never enter it. Queries must spell the predicate the same way to use it.
PENDING = text("status = 'pending'")
Id = String(200)

metadata = MetaData()

teams = Table(
    "teams",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("limits", Json, nullable=False),
    Column("budget", Json, nullable=True),
    Column("metadata", Json, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

virtual_keys = Table(
    "virtual_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", LargeBinary(64), nullable=False),
    Column("hint", String(64), nullable=False),
    Column("team_id", Id, nullable=True),
    Column("models", Json, nullable=False),
    Column("cidrs", Json, nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("metadata", Json, nullable=False),
    Column("limits", Json, nullable=False),
    Column("model_limits", Json, nullable=False),
    Column("budget", Json, nullable=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_virtual_keys_key_hash", "key_hash", unique=True),
    Index("ix_virtual_keys_team_id", "team_id"),
)

provider_secrets = Table(
    "provider_secrets",
    metadata,
    Column("name", Id, primary_key=True),
    Column("ciphertext", LargeBinary(), nullable=False),
    Column("nonce", LargeBinary(64), nullable=False),
    Column("key_id", String(128), nullable=False),
    Column("hint", String(64), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

usage = Table(
    "usage",
    metadata,
    Column("attempt_id", Id, primary_key=True),
    Column("request_id", Id, nullable=False),
    Column("key_id", Id, nullable=True),
    Column("team_id", Id, nullable=True),
    Column("model", String(200), nullable=False),
    Column("provider", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("input_tokens", BigInteger(), nullable=False),
    Column("output_tokens", BigInteger(), nullable=False),
    Column("cost", Money(), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("http_status", Integer(), nullable=True),
    Index("ix_usage_started_at", "started_at"),
    Index("ix_usage_key_id_started_at", "key_id", "started_at"),
    # a request's attempts: a range of the primary key ("<request id>.<n>"); see 0002
    Index("ix_usage_pending", "started_at", sqlite_where=PENDING, postgresql_where=PENDING),
)

spend = Table(
    "spend",
    metadata,
    Column("scope", Id, primary_key=True),
    Column("period_start", UtcDateTime(), primary_key=True),
    Column("amount", Money(), nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("actor", String(200), nullable=False),
    Column("actor_name", String(200), nullable=True),
    Column("action", String(200), nullable=False),
    Column("target", String(400), nullable=False),
    Column("detail", Json, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_audit_at", "at"),
    sqlite_autoincrement=True,
)

# One row per changed key or team, holding the version of its last change; the version comes
# from the single ``change_version`` row, whose row lock orders concurrent writers, so versions
# become visible in increasing order and a reader never skips one.
changes = Table(
    "changes",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("entity_id", Id, primary_key=True),
    Column("version", BigInteger(), nullable=False),
    Index("ix_changes_version", "version"),
)

change_version = Table(
    "change_version",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("version", BigInteger(), nullable=False),
)
