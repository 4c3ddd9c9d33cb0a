"""The one storage interface; backends: SQLite (default), PostgreSQL, memory (tests).

Every call has a timeout at the backend; an unreachable database raises
:class:`StorageUnavailable` (callers turn that into 503, never 401).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from .models import AuditEntry, ProviderSecret, Team, UsageRecord, VirtualKey

__all__ = ["StorageUnavailable", "Store"]


class StorageUnavailable(Exception):
    """The database did not answer in time or refused the connection."""


class Store(Protocol):
    async def migrate(self) -> None:
        """Create or upgrade the schema to the current version."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageUnavailable if the database cannot be reached."""

    # --- teams
    async def put_team(self, team: Team) -> None: ...
    async def get_team(self, team_id: str) -> Team | None: ...
    async def list_teams(self) -> list[Team]: ...
    async def delete_team(self, team_id: str) -> bool: ...

    # --- virtual keys
    async def put_key(self, key: VirtualKey) -> None:
        """Insert or replace (by id); bumps the change counter."""

    async def get_key(self, key_id: str) -> VirtualKey | None: ...
    async def get_key_by_hash(self, key_hash: bytes) -> VirtualKey | None: ...
    async def list_keys(self, team_id: str | None = None) -> list[VirtualKey]: ...

    async def changes_since(self, version: int) -> tuple[int, list[str]]:
        """(current version, ids of keys/teams changed after ``version``) — for caches."""

    # --- provider secrets (already encrypted by the caller)
    async def put_secret(self, secret: ProviderSecret) -> None: ...
    async def get_secret(self, name: str) -> ProviderSecret | None: ...
    async def list_secrets(self) -> list[ProviderSecret]: ...
    async def delete_secret(self, name: str) -> bool: ...

    # --- usage (idempotent on attempt_id)
    async def write_usage(self, records: list[UsageRecord]) -> None: ...
    async def list_usage(
        self, *, key_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[UsageRecord]: ...
    async def interrupt_stale(self, started_before: datetime, limit: int) -> int:
        """Mark at most ``limit`` attempts still ``pending`` that started before
        ``started_before`` as ``interrupted`` (tokens and cost as last recorded); how many.
        One bounded statement, safe from every node at once (see ``storage.sweeper``)."""

    # --- spend (budgets); atomic in the database
    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool:
        """Add ``amount`` to the scope's spend for the period iff the result stays <= ``limit``
        (None: no limit). One statement: concurrent reservations can never overdraw."""

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None:
        """Settle: add ``delta`` (may be negative) unconditionally."""

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal: ...

    # --- audit
    async def audit(self, entry: AuditEntry) -> None: ...
    async def list_audit(self, limit: int = 100) -> list[AuditEntry]: ...
