"""How records become rows and back, and the value rules every backend shares.

Money is kept to :data:`MONEY_PLACES` decimal places (half-even), datetimes are UTC (a naive
datetime is taken to be UTC already), JSON columns hold only JSON types (``Decimal`` as a string).
The memory backend applies the same rules so every backend returns the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from .models import (
    AuditEntry,
    Budget,
    Limits,
    ProviderSecret,
    Team,
    UsageRecord,
    VirtualKey,
)

__all__ = [
    "MONEY_PLACES",
    "Row",
    "audit_from_row",
    "audit_row",
    "key_from_row",
    "key_row",
    "money",
    "secret_from_row",
    "secret_row",
    "settles",
    "sqlite_usage_row",
    "team_from_row",
    "team_row",
    "usage_from_row",
    "usage_row",
    "utc",
]

MONEY_PLACES = 9  # nano-units: a $0.15 / 1M-token price times one token is still exact
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)

Row = dict[str, object]  # column name -> value, ready for an INSERT


def money(value: Decimal | int) -> Decimal:
    """``value`` rounded half-even to MONEY_PLACES places — what every backend stores."""
    return Decimal(value).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive input is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def settles(stored: str, incoming: str) -> bool:
    """Whether ``incoming`` may overwrite ``stored``: a settled row never goes back to pending."""
    return stored == "pending" or incoming != "pending"


# --- JSON values


def _limits_json(limits: Limits) -> dict[str, int | None]:
    return {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency}


def _limits(data: Mapping[str, Any]) -> Limits:
    return Limits(rpm=data.get("rpm"), tpm=data.get("tpm"), concurrency=data.get("concurrency"))


def _budget_json(budget: Budget | None) -> dict[str, object] | None:
    if budget is None:
        return None
    return {
        "amount": str(budget.amount),
        "currency": budget.currency,
        "period": budget.period,
        "hard": budget.hard,
    }


def _budget(data: Mapping[str, Any] | None) -> Budget | None:
    if data is None:
        return None
    return Budget(
        amount=Decimal(data["amount"]),
        currency=data["currency"],
        period=data["period"],
        hard=bool(data["hard"]),
    )


# --- records


def team_row(team: Team, now: datetime) -> Row:
    return {
        "id": team.id,
        "name": team.name,
        "limits": _limits_json(team.limits),
        "budget": _budget_json(team.budget),
        "metadata": dict(team.metadata),
        "created_at": utc(team.created_at or now),
    }


def team_from_row(row: Mapping[Any, Any]) -> Team:
    return Team(
        id=row["id"],
        name=row["name"],
        limits=_limits(row["limits"]),
        budget=_budget(row["budget"]),
        metadata=dict(row["metadata"]),
        created_at=_utc_or_none(row["created_at"]),
    )


def key_row(key: VirtualKey, now: datetime) -> Row:
    return {
        "id": key.id,
        "name": key.name,
        "key_hash": bytes(key.key_hash),
        "hint": key.hint,
        "team_id": key.team_id,
        "models": list(key.models),
        "cidrs": list(key.cidrs),
        "expires_at": _utc_or_none(key.expires_at),
        "revoked_at": _utc_or_none(key.revoked_at),
        "metadata": dict(key.metadata),
        "limits": _limits_json(key.limits),
        "model_limits": {k: _limits_json(v) for k, v in key.model_limits.items()},
        "budget": _budget_json(key.budget),
        "role": key.role,
        "created_at": utc(key.created_at or now),
        "updated_at": utc(now),
    }


def key_from_row(row: Mapping[Any, Any]) -> VirtualKey:
    return VirtualKey(
        id=row["id"],
        name=row["name"],
        key_hash=bytes(row["key_hash"]),
        hint=row["hint"],
        team_id=row["team_id"],
        models=tuple(row["models"]),
        cidrs=tuple(row["cidrs"]),
        expires_at=_utc_or_none(row["expires_at"]),
        revoked_at=_utc_or_none(row["revoked_at"]),
        metadata=dict(row["metadata"]),
        limits=_limits(row["limits"]),
        model_limits={k: _limits(v) for k, v in row["model_limits"].items()},
        budget=_budget(row["budget"]),
        role=row["role"],
        created_at=_utc_or_none(row["created_at"]),
        updated_at=_utc_or_none(row["updated_at"]),
    )


def secret_row(secret: ProviderSecret, now: datetime) -> Row:
    return {
        "name": secret.name,
        "ciphertext": bytes(secret.ciphertext),
        "nonce": bytes(secret.nonce),
        "key_id": secret.key_id,
        "hint": secret.hint,
        "updated_at": utc(now),
    }


def secret_from_row(row: Mapping[Any, Any]) -> ProviderSecret:
    return ProviderSecret(
        name=row["name"],
        ciphertext=bytes(row["ciphertext"]),
        nonce=bytes(row["nonce"]),
        key_id=row["key_id"],
        hint=row["hint"],
        updated_at=_utc_or_none(row["updated_at"]),
    )


def usage_row(record: UsageRecord) -> Row:
    return {
        "attempt_id": record.attempt_id,
        "request_id": record.request_id,
        "key_id": record.key_id,
        "team_id": record.team_id,
        "model": record.model,
        "provider": record.provider,
        "status": record.status,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost": money(record.cost),
        "currency": record.currency,
        "started_at": _utc_or_none(record.started_at),
        "finished_at": _utc_or_none(record.finished_at),
        "http_status": record.http_status,
    }


# The usage table's columns in order: the record's fields (statements.py checks the table).
USAGE_COLUMNS = tuple(f.name for f in fields(UsageRecord))
SQLITE_MAX_UNITS = 2**63 - 1


def sqlite_money(value: Decimal) -> int:
    """Money as SQLite stores it: an integer count of nano-units (schema.Money)."""
    units = int(money(value).scaleb(MONEY_PLACES))
    if abs(units) > SQLITE_MAX_UNITS:
        raise ValueError(f"amount {value} is too large to store exactly")
    return units


def sqlite_time(value: datetime | None) -> str | None:
    """A datetime as SQLite stores it: naive UTC text, the format of SQLAlchemy's DateTime."""
    if value is None:
        return None
    if value.tzinfo is UTC and value.microsecond:  # else the fraction is left out
        text = orjson.dumps(value).decode()  # '"2026-11-27T17:21:34.858551+00:00"'; no printf
        return text[1:11] + " " + text[12:27]
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def sqlite_usage_row(r: UsageRecord) -> tuple[object, ...]:
    """:func:`usage_row` in stored form, in :data:`USAGE_COLUMNS` order."""
    return (
        r.attempt_id,
        r.request_id,
        r.key_id,
        r.team_id,
        r.model,
        r.provider,
        r.status,
        r.input_tokens,
        r.output_tokens,
        sqlite_money(r.cost),
        r.currency,
        sqlite_time(r.started_at),
        sqlite_time(r.finished_at),
        r.http_status,
    )


def usage_from_row(row: Mapping[Any, Any]) -> UsageRecord:
    return UsageRecord(
        attempt_id=row["attempt_id"],
        request_id=row["request_id"],
        key_id=row["key_id"],
        team_id=row["team_id"],
        model=row["model"],
        provider=row["provider"],
        status=row["status"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost=money(row["cost"]),
        currency=row["currency"],
        started_at=_utc_or_none(row["started_at"]),
        finished_at=_utc_or_none(row["finished_at"]),
        http_status=row["http_status"],
    )


def audit_row(entry: AuditEntry, now: datetime) -> Row:
    return {
        "actor": entry.actor,
        "actor_name": entry.actor_name,
        "action": entry.action,
        "target": entry.target,
        "detail": dict(entry.detail),
        "at": utc(entry.at or now),
    }


def audit_from_row(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        detail=dict(row["detail"]),
        at=_utc_or_none(row["at"]),
        id=row["id"],
        actor_name=row["actor_name"],
    )
