"""Admin API request bodies (validated, unknown fields refused) and response shapes."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import BudgetConfig, LimitsConfig
from ..storage.models import Budget, Limits, ProviderSecret, Team, VirtualKey

__all__ = [
    "KeyIn",
    "KeyPatch",
    "SecretIn",
    "TeamIn",
    "TeamPatch",
    "budget_status_out",
    "decimal_text",
    "key_out",
    "secret_out",
    "team_out",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyIn(_In):
    name: str = Field(min_length=1, max_length=128)
    team_id: str | None = None
    models: list[str] = Field(default_factory=lambda: ["*"])
    cidrs: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limits: LimitsConfig | None = None
    model_limits: dict[str, LimitsConfig] = Field(default_factory=dict)
    budget: BudgetConfig | None = None
    role: Literal["user", "admin", "viewer"] = "user"

    @field_validator("cidrs")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not a network (CIDR)") from None
        return v


class KeyPatch(KeyIn):
    name: str | None = Field(None, min_length=1, max_length=128)  # type: ignore[assignment]
    models: list[str] | None = None  # type: ignore[assignment]
    cidrs: list[str] | None = None  # type: ignore[assignment]
    metadata: dict[str, Any] | None = None  # type: ignore[assignment]
    model_limits: dict[str, LimitsConfig] | None = None  # type: ignore[assignment]
    role: Literal["user", "admin", "viewer"] | None = None  # type: ignore[assignment]


class TeamIn(_In):
    name: str = Field(min_length=1, max_length=128)
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=128)
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    metadata: dict[str, Any] | None = None


class SecretIn(_In):
    api_key: str = Field(min_length=1, max_length=4096)


def _limits(limits: Limits) -> dict[str, int | None]:
    return {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency}


def _budget(budget: Budget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {
        "amount": str(budget.amount),
        "currency": budget.currency,
        "period": budget.period,
        "hard": budget.hard,
    }


def decimal_text(value: Decimal) -> str:
    """A plain decimal string: ``0.0000375``, ``130``, never ``3.75E-5``."""
    return "0" if value == 0 else format(value.normalize(), "f")


def budget_status_out(
    budget: Budget, spent: Decimal, start: datetime, end: datetime | None
) -> dict[str, Any]:
    """How much of ``budget`` its current period (``start`` to ``end``, None: never ends) has
    used; ``remaining`` stops at zero (a budget may be overdrawn by requests in flight)."""
    return {
        "spent": decimal_text(spent),
        "remaining": decimal_text(max(Decimal(0), budget.amount - spent)),
        "currency": budget.currency,
        "period": budget.period,
        "period_start": start.isoformat(),
        "period_end": _time(end),
    }


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def key_out(key: VirtualKey) -> dict[str, Any]:
    """A key as the API shows it: the hint, never the secret or its hash."""
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "team_id": key.team_id,
        "models": list(key.models),
        "cidrs": list(key.cidrs),
        "role": key.role,
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "metadata": key.metadata,
        "limits": _limits(key.limits),
        "model_limits": {m: _limits(lim) for m, lim in key.model_limits.items()},
        "budget": _budget(key.budget),
        "created_at": _time(key.created_at),
        "updated_at": _time(key.updated_at),
    }


def team_out(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "limits": _limits(team.limits),
        "budget": _budget(team.budget),
        "metadata": team.metadata,
        "created_at": _time(team.created_at),
    }


def secret_out(secret: ProviderSecret) -> dict[str, Any]:
    return {
        "provider": secret.name,
        "hint": secret.hint,
        "key_id": secret.key_id,
        "updated_at": _time(secret.updated_at),
    }
