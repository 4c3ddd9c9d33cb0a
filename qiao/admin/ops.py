"""The admin operations behind both the admin REST API and the ``qiao`` command line.

Keys, teams and provider keys. Each function takes the store, the actor (who acts, for the
audit log) and input already validated by :mod:`qiao.admin.schemas`; it writes the record and
its audit entry and returns the record. A created or rotated key comes back with its secret,
which exists nowhere else: the store keeps only its SHA-256 digest and a hint. Failures are
:class:`~qiao.errors.QiaoError` (400, 404), which the API renders and the CLI prints.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..auth import digest
from ..errors import InvalidRequest, NotFound
from ..policies.budget import BudgetGuard, period_end, period_start
from ..secrets import SecretError, Vault, hint
from ..storage.base import StorageUnavailable, Store
from ..storage.models import AuditEntry, Budget, Limits, ProviderSecret, Team, VirtualKey
from .schemas import (
    KeyIn,
    KeyPatch,
    SecretIn,
    TeamIn,
    TeamPatch,
    budget_status_out,
    decimal_text,
)

__all__ = [
    "Actor",
    "Issued",
    "budget_status",
    "create_key",
    "create_team",
    "delete_provider_key",
    "delete_team",
    "find_team",
    "get_key",
    "get_team",
    "key_scope",
    "new_secret",
    "reset_key_budget",
    "reset_team_budget",
    "revoke_key",
    "rotate_key",
    "rotate_master",
    "set_provider_key",
    "team_scope",
    "update_key",
    "update_team",
]

log = logging.getLogger("qiao.admin")

SECRET_PREFIX = "sk-qiao-"  # noqa: S105 (a prefix, not a password)
NO_MASTER_KEY = (
    "No master key is loaded (set QIAO_MASTER_KEY or QIAO_MASTER_KEY_FILE): "
    "provider keys cannot be stored encrypted."
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, for the audit log: an id that names one caller (a key's id, ``cfg:<name>`` for
    a key written in the config, ``cli``, ``bootstrap``; names are not unique) and the
    caller's name at the time, for people reading the log."""

    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """A key and its secret, shown once. ``old_hash``: the digest a rotation replaced."""

    key: VirtualKey
    secret: str
    old_hash: bytes | None = None


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


async def _audit(store: Store, actor: Actor, action: str, target: str, **detail: Any) -> None:
    entry = AuditEntry(actor.id, action, target, detail, _now(), actor_name=actor.name)
    await store.audit(entry)


# ---------------------------------------------------------------------- look-ups


async def get_key(store: Store, key_id: str) -> VirtualKey:
    key = await store.get_key(key_id)
    if key is None:
        raise NotFound(f"No key {key_id!r}.", code="key_not_found")
    return key


async def get_team(store: Store, team_id: str) -> Team:
    team = await store.get_team(team_id)
    if team is None:
        raise NotFound(f"No team {team_id!r}.", code="team_not_found")
    return team


async def find_team(store: Store, ref: str) -> Team:
    """A team by id, else by name (which must then be unique) — for people typing names."""
    team = await store.get_team(ref)
    if team is not None:
        return team
    named = [t for t in await store.list_teams() if t.name == ref]
    if len(named) > 1:
        ids = ", ".join(t.id for t in named)
        raise InvalidRequest(f"{len(named)} teams are named {ref!r} ({ids}); give the id.")
    if not named:
        raise NotFound(f"No team {ref!r}.", code="team_not_found")
    return named[0]


async def _check_team(store: Store, team_id: str | None) -> None:
    if team_id and await store.get_team(team_id) is None:
        raise InvalidRequest(f"No team {team_id!r}.", param="team_id")


# ---------------------------------------------------------------------- keys


async def create_key(store: Store, actor: Actor, body: KeyIn) -> Issued:
    await _check_team(store, body.team_id)
    secret = new_secret()
    now = _now()
    key = VirtualKey(
        id="key_" + secrets.token_hex(8),
        name=body.name,
        key_hash=digest(secret),
        hint=hint(secret),
        team_id=body.team_id,
        models=tuple(body.models),
        cidrs=tuple(body.cidrs),
        expires_at=body.expires_at,
        metadata=body.metadata,
        limits=body.limits.to_limits() if body.limits else Limits(),
        model_limits={m: lim.to_limits() for m, lim in body.model_limits.items()},
        budget=body.budget.to_budget() if body.budget else None,
        role=body.role,
        created_at=now,
        updated_at=now,
    )
    await store.put_key(key)
    await _audit(store, actor, "key.create", key.id, name=key.name, role=key.role)
    return Issued(key, secret)


def _key_changes(patch: KeyPatch) -> dict[str, Any]:
    """The fields ``patch`` sets; a field given as null resets it (no team, no limits, ...)."""
    given = patch.model_fields_set
    changes: dict[str, Any] = {}
    for field in ("name", "team_id", "expires_at", "metadata", "role"):
        if field in given:
            changes[field] = getattr(patch, field)
    if "models" in given and patch.models is not None:
        changes["models"] = tuple(patch.models)
    if "cidrs" in given and patch.cidrs is not None:
        changes["cidrs"] = tuple(patch.cidrs)
    if "limits" in given:
        changes["limits"] = patch.limits.to_limits() if patch.limits else Limits()
    if "model_limits" in given:
        changes["model_limits"] = {m: v.to_limits() for m, v in (patch.model_limits or {}).items()}
    if "budget" in given:
        changes["budget"] = patch.budget.to_budget() if patch.budget else None
    return changes


async def update_key(store: Store, actor: Actor, key_id: str, patch: KeyPatch) -> VirtualKey:
    key = await get_key(store, key_id)
    changes = _key_changes(patch)
    await _check_team(store, changes.get("team_id"))
    updated = replace(key, **changes, updated_at=_now())
    await store.put_key(updated)
    await _audit(store, actor, "key.update", key.id, fields=sorted(changes))
    return updated


async def revoke_key(store: Store, actor: Actor, key_id: str) -> VirtualKey:
    key = await get_key(store, key_id)
    updated = replace(key, revoked_at=key.revoked_at or _now(), updated_at=_now())
    await store.put_key(updated)
    await _audit(store, actor, "key.revoke", key.id)
    return updated


async def rotate_key(store: Store, actor: Actor, key_id: str) -> Issued:
    key = await get_key(store, key_id)
    if key.revoked_at is not None:
        raise InvalidRequest("A revoked key cannot be rotated.", code="key_revoked")
    secret = new_secret()
    updated = replace(key, key_hash=digest(secret), hint=hint(secret), updated_at=_now())
    await store.put_key(updated)
    await _audit(store, actor, "key.rotate", key.id)
    return Issued(updated, secret, key.key_hash)


# ---------------------------------------------------------------------- teams


async def create_team(store: Store, actor: Actor, body: TeamIn) -> Team:
    team = Team(
        id="team_" + secrets.token_hex(6),
        name=body.name,
        limits=body.limits.to_limits() if body.limits else Limits(),
        budget=body.budget.to_budget() if body.budget else None,
        metadata=body.metadata,
        created_at=_now(),
    )
    await store.put_team(team)
    await _audit(store, actor, "team.create", team.id, name=team.name)
    return team


async def update_team(store: Store, actor: Actor, team_id: str, patch: TeamPatch) -> Team:
    team = await get_team(store, team_id)
    given = patch.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in given and patch.name:
        changes["name"] = patch.name
    if "metadata" in given:
        changes["metadata"] = patch.metadata or {}
    if "limits" in given:
        changes["limits"] = patch.limits.to_limits() if patch.limits else Limits()
    if "budget" in given:
        changes["budget"] = patch.budget.to_budget() if patch.budget else None
    updated = replace(team, **changes)
    await store.put_team(updated)
    await _audit(store, actor, "team.update", team.id, fields=sorted(changes))
    return updated


async def delete_team(store: Store, actor: Actor, team_id: str) -> Team:
    team = await get_team(store, team_id)
    if await store.list_keys(team_id=team.id):
        raise InvalidRequest("The team still has keys; move or revoke them first.")
    await store.delete_team(team.id)
    await _audit(store, actor, "team.delete", team.id)
    return team


# ---------------------------------------------------------------------- budgets


def key_scope(key: VirtualKey) -> str:
    """The spend scope the gate charges for a store key: ``key:`` + ``Principal.scope_id``,
    which is the key's id (:func:`qiao.auth.principal_for`)."""
    return f"key:{key.id}"


def team_scope(team: Team) -> str:
    return f"team:{team.id}"


async def budget_status(guard: BudgetGuard, scope: str, budget: Budget) -> dict[str, Any] | None:
    """The current period's spend of ``scope`` against ``budget`` (reservations in flight
    included), or None when the spend ledger cannot be read — a status, never an error."""
    try:
        spent = await guard.spent(scope, budget)
    except (StorageUnavailable, TimeoutError, OSError) as exc:
        log.warning("budget status of %s unavailable: %s", scope, type(exc).__name__)
        return None
    start = period_start(budget.period, _now())
    return budget_status_out(budget, spent, start, period_end(budget.period, start))


async def _reset(
    store: Store, guard: BudgetGuard, actor: Actor, kind: str, scope: str, budget: Budget | None
) -> None:
    if budget is None:
        raise InvalidRequest(f"This {kind} has no budget to reset.", code="no_budget")
    spent = await guard.spent(scope, budget)  # what the reset forgives, for the audit log
    await guard.reset(scope, budget)
    start = period_start(budget.period, _now())
    await _audit(
        store,
        actor,
        f"{kind}.budget_reset",
        scope.split(":", 1)[1],
        spent=decimal_text(spent),
        currency=budget.currency,
        period=budget.period,
        period_start=start.isoformat(),
    )


async def reset_key_budget(
    store: Store, guard: BudgetGuard, actor: Actor, key_id: str
) -> VirtualKey:
    """Zero the spend of the key's current budget period (400 if it has no budget)."""
    key = await get_key(store, key_id)
    await _reset(store, guard, actor, "key", key_scope(key), key.budget)
    return key


async def reset_team_budget(store: Store, guard: BudgetGuard, actor: Actor, team_id: str) -> Team:
    """Zero the spend of the team's current budget period (400 if it has no budget)."""
    team = await get_team(store, team_id)
    await _reset(store, guard, actor, "team", team_scope(team), team.budget)
    return team


# ---------------------------------------------------------------------- provider keys


async def set_provider_key(
    store: Store, actor: Actor, vault: Vault | None, name: str, body: SecretIn
) -> ProviderSecret:
    if vault is None:
        raise InvalidRequest(NO_MASTER_KEY, code="no_master_key")
    try:
        sealed = vault.seal(name, body.api_key)
    except SecretError as exc:
        raise InvalidRequest(str(exc)) from None
    sealed.updated_at = _now()
    await store.put_secret(sealed)
    await _audit(store, actor, "provider_key.set", name, hint=sealed.hint)
    return sealed


async def delete_provider_key(store: Store, actor: Actor, name: str) -> None:
    if not await store.delete_secret(name):
        raise NotFound(f"No stored key for provider {name!r}.")
    await _audit(store, actor, "provider_key.delete", name)


async def rotate_master(store: Store, actor: Actor, vault: Vault) -> list[ProviderSecret]:
    """Re-seal every stored provider key under ``vault``'s current master.

    All are opened before any is written, so a key that does not open changes nothing. Each
    write is whole; if the run stops part-way, running it again with the same keys finishes it
    (secrets already under the current master open with it).
    """
    stored = await store.list_secrets()
    try:
        resealed = vault.rotate(stored)
    except SecretError as exc:
        raise InvalidRequest(str(exc), code="master_key_mismatch") from None
    for secret in resealed:
        await store.put_secret(secret)
    previous = sorted({s.key_id for s in stored})
    await _audit(
        store, actor, "master_key.rotate", vault.key_id, count=len(resealed), previous=previous
    )
    return resealed
