"""The in-process backend of :class:`~qiao.storage.base.Store`, for tests and ``--demo``.

Atomic by construction: no method awaits while it changes state, so under asyncio each call
runs alone. Records go through the same :mod:`~qiao.storage.codec` rows as the SQL backend
(copied in and out), so both return the same values: money to nine places, datetimes in UTC.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from . import codec
from .models import AuditEntry, ProviderSecret, Team, UsageRecord, VirtualKey

__all__ = ["MemoryStore"]


_DAWN = datetime.min.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _matches(row: codec.Row, key_id: str | None, start: datetime | None) -> bool:
    if key_id is not None and row["key_id"] != key_id:
        return False
    started = row["started_at"]
    return start is None or (isinstance(started, datetime) and started >= start)


def _usage_order(row: codec.Row) -> tuple[bool, datetime, str]:
    started = row["started_at"]
    if isinstance(started, datetime):
        return True, started, str(row["attempt_id"])
    return False, _DAWN, str(row["attempt_id"])


def _copy(row: codec.Row) -> codec.Row:
    return copy.deepcopy(row)


class MemoryStore:
    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._teams: dict[str, codec.Row] = {}
        self._keys: dict[str, codec.Row] = {}
        self._secrets: dict[str, codec.Row] = {}
        self._usage: dict[str, codec.Row] = {}
        self._spend: dict[tuple[str, datetime], Decimal] = {}
        self._audit: list[codec.Row] = []
        self._version = 0
        self._changes: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return "MemoryStore()"

    def _bump(self, kind: str, entity_id: str) -> None:
        self._version += 1
        self._changes[kind, entity_id] = self._version

    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # --- teams

    async def put_team(self, team: Team) -> None:
        row = codec.team_row(team, self._clock())
        old = self._teams.get(team.id)
        if old is not None and team.created_at is None:
            row["created_at"] = old["created_at"]
        self._teams[team.id] = _copy(row)
        self._bump("team", team.id)

    async def get_team(self, team_id: str) -> Team | None:
        row = self._teams.get(team_id)
        return None if row is None else codec.team_from_row(_copy(row))

    async def list_teams(self) -> list[Team]:
        rows = sorted(self._teams.values(), key=lambda r: (r["created_at"], r["id"]))
        return [codec.team_from_row(_copy(r)) for r in rows]

    async def delete_team(self, team_id: str) -> bool:
        if self._teams.pop(team_id, None) is None:
            return False
        self._bump("team", team_id)
        return True

    # --- virtual keys

    async def put_key(self, key: VirtualKey) -> None:
        row = codec.key_row(key, self._clock())
        for other in self._keys.values():
            if other["key_hash"] == row["key_hash"] and other["id"] != key.id:
                raise ValueError("constraint violated: key_hash already belongs to another key")
        old = self._keys.get(key.id)
        if old is not None and key.created_at is None:
            row["created_at"] = old["created_at"]
        self._keys[key.id] = _copy(row)
        self._bump("key", key.id)

    async def get_key(self, key_id: str) -> VirtualKey | None:
        row = self._keys.get(key_id)
        return None if row is None else codec.key_from_row(_copy(row))

    async def get_key_by_hash(self, key_hash: bytes) -> VirtualKey | None:
        for row in self._keys.values():
            if row["key_hash"] == key_hash:
                return codec.key_from_row(_copy(row))
        return None

    async def list_keys(self, team_id: str | None = None) -> list[VirtualKey]:
        rows = [r for r in self._keys.values() if team_id is None or r["team_id"] == team_id]
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [codec.key_from_row(_copy(r)) for r in rows]

    async def changes_since(self, version: int) -> tuple[int, list[str]]:
        since = version if version <= self._version else 0
        ids = {entity for (_, entity), v in self._changes.items() if v > since}
        return self._version, sorted(ids)

    # --- provider secrets

    async def put_secret(self, secret: ProviderSecret) -> None:
        self._secrets[secret.name] = _copy(codec.secret_row(secret, self._clock()))

    async def get_secret(self, name: str) -> ProviderSecret | None:
        row = self._secrets.get(name)
        return None if row is None else codec.secret_from_row(_copy(row))

    async def list_secrets(self) -> list[ProviderSecret]:
        return [codec.secret_from_row(_copy(self._secrets[n])) for n in sorted(self._secrets)]

    async def delete_secret(self, name: str) -> bool:
        return self._secrets.pop(name, None) is not None

    # --- usage

    async def write_usage(self, records: list[UsageRecord]) -> None:
        for record in records:
            old = self._usage.get(record.attempt_id)
            if old is None or codec.settles(str(old["status"]), record.status):
                self._usage[record.attempt_id] = _copy(codec.usage_row(record))

    async def interrupt_stale(self, started_before: datetime, limit: int) -> int:
        before = codec.utc(started_before)
        stale = [
            row
            for row in self._usage.values()
            if row["status"] == "pending"
            and isinstance(row["started_at"], datetime)
            and row["started_at"] < before
        ]
        stale.sort(key=_usage_order)  # oldest first, like the SQL backend
        now = self._clock()
        batch = stale[:limit]
        for row in batch:
            row["status"], row["finished_at"] = "interrupted", now
        return len(batch)

    async def list_usage(
        self, *, key_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        start = None if since is None else codec.utc(since)
        rows = [r for r in self._usage.values() if _matches(r, key_id, start)]
        # newest first, undated last, ties by attempt id descending: what the SQL ORDER BY does
        rows.sort(key=_usage_order, reverse=True)
        return [codec.usage_from_row(_copy(r)) for r in rows[:limit]]

    # --- spend

    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool:
        key = (scope, codec.utc(period_start))
        total = self._spend.get(key, codec.money(0)) + codec.money(amount)
        if limit is not None and total > codec.money(limit):
            return False
        self._spend[key] = total
        return True

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None:
        await self.reserve_spend(scope, period_start, delta, None)

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal:
        return self._spend.get((scope, codec.utc(period_start)), codec.money(0))

    # --- audit

    async def audit(self, entry: AuditEntry) -> None:
        row = codec.audit_row(entry, self._clock())
        row["id"] = len(self._audit) + 1
        self._audit.append(_copy(row))

    async def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        return [codec.audit_from_row(_copy(r)) for r in self._audit[::-1][:limit]]
