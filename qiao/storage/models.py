"""Records Qiao keeps: teams, virtual keys, provider secrets, usage, spend and the audit log.

Plain dataclasses shared by every storage backend. Money is ``Decimal`` (never float); a
virtual key is stored only as its SHA-256 digest plus a short hint for humans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "AuditEntry",
    "Budget",
    "Currency",
    "Limits",
    "Period",
    "ProviderSecret",
    "Team",
    "UsageRecord",
    "UsageStatus",
    "VirtualKey",
]

Currency = Literal["USD", "CNY", "tokens"]
Period = Literal["day", "week", "month", "total"]
UsageStatus = Literal["pending", "ok", "error", "interrupted"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-scope request limits; None means unlimited."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (input + output)
    concurrency: int | None = None  # requests in flight


@dataclass(frozen=True, slots=True)
class Budget:
    amount: Decimal
    currency: Currency = "USD"
    period: Period = "month"
    hard: bool = True  # refuse past the budget; False: alert at 80 % and 100 % only

    def __post_init__(self) -> None:  # checked once here, not on every request it limits
        amount = self.amount
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
            raise ValueError(f"budget amount must be a finite, non-negative Decimal: {amount!r}")


@dataclass(slots=True)
class Team:
    id: str
    name: str
    limits: Limits = field(default_factory=Limits)
    budget: Budget | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(slots=True)
class VirtualKey:
    id: str
    name: str
    key_hash: bytes  # sha256 of the secret
    hint: str  # e.g. "sk-…ab12"
    team_id: str | None = None
    models: tuple[str, ...] = ("*",)
    cidrs: tuple[str, ...] = ()  # allowed source networks; empty = any
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    model_limits: dict[str, Limits] = field(default_factory=dict)  # per key × model pattern
    budget: Budget | None = None
    role: Literal["user", "admin", "viewer"] = "user"
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class ProviderSecret:
    """A provider API key encrypted with AES-256-GCM under the master key ``key_id``."""

    name: str
    ciphertext: bytes
    nonce: bytes
    key_id: str  # fingerprint of the master key that encrypted it
    hint: str  # "sk-…ab12"
    updated_at: datetime | None = None


@dataclass(slots=True)
class UsageRecord:
    """One upstream attempt. Written ``pending`` before it is forwarded, settled after;
    writes are idempotent on ``attempt_id`` (a settled row is never turned back to pending)."""

    attempt_id: str
    request_id: str
    key_id: str | None
    team_id: str | None
    model: str
    provider: str | None
    status: UsageStatus = "pending"
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    currency: Currency = "USD"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    http_status: int | None = None


@dataclass(slots=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    id: int | None = None
    actor_name: str | None = None  # ``actor`` is an id (names repeat); its name then, for people
