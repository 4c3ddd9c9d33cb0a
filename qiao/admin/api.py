"""The admin REST API under /admin: keys, teams, provider secrets, usage, audit.

Roles: ``admin`` may change things, ``viewer`` may read. The first admin credential comes from
the config (``admin_key``), the environment, or a one-time bootstrap token printed at start-up
when no admin exists — there is no default password. Every change goes to the audit log; a
created or rotated key is shown once and stored only as its SHA-256 digest.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..auth import KeyRing, Principal, credential_from, digest, principal_for
from ..errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QiaoError,
    Unavailable,
)
from ..secrets import SecretError, Vault, hint
from ..storage.base import StorageUnavailable, Store
from ..storage.models import AuditEntry, Limits, Team, VirtualKey
from ..surfaces.openai import error_body
from .openapi import OPENAPI
from .schemas import KeyIn, KeyPatch, SecretIn, TeamIn, TeamPatch, key_out, secret_out, team_out

__all__ = ["AdminAPI", "new_secret"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def new_secret() -> str:
    return "sk-qiao-" + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


class AdminAPI:
    def __init__(self, store: Store, ring: KeyRing, vault: Vault | None) -> None:
        self._store = store
        self._ring = ring
        self._vault = vault
        self._bootstrap: str | None = None

    def routes(self) -> list[web.RouteDef]:
        r, w = self._read, self._write
        return [
            web.get("/admin/openapi.json", self.openapi),
            web.post("/admin/bootstrap", self.bootstrap),
            web.get("/admin/keys", r(self.list_keys)),
            web.post("/admin/keys", w(self.create_key)),
            web.get("/admin/keys/{id}", r(self.show_key)),
            web.patch("/admin/keys/{id}", w(self.update_key)),
            web.post("/admin/keys/{id}/revoke", w(self.revoke_key)),
            web.post("/admin/keys/{id}/rotate", w(self.rotate_key)),
            web.get("/admin/teams", r(self.list_teams)),
            web.post("/admin/teams", w(self.create_team)),
            web.get("/admin/teams/{id}", r(self.show_team)),
            web.patch("/admin/teams/{id}", w(self.update_team)),
            web.delete("/admin/teams/{id}", w(self.delete_team)),
            web.get("/admin/providers", r(self.list_secrets)),
            web.put("/admin/providers/{name}/key", w(self.put_secret)),
            web.delete("/admin/providers/{name}/key", w(self.delete_secret)),
            web.get("/admin/usage", r(self.usage)),
            web.get("/admin/audit", r(self.audit_log)),
        ]

    # ------------------------------------------------------------------ auth
    def enable_bootstrap(self) -> str:
        """A one-time token that may create the first admin key (POST /admin/bootstrap)."""
        self._bootstrap = "qiao-bootstrap-" + secrets.token_urlsafe(24)
        return self._bootstrap

    def _principal(self, request: web.Request, *, write: bool) -> Principal:
        principal = self._ring.authenticate(credential_from(request.headers, request.query))
        if not (principal.admin or principal.role in ("admin", "viewer")):
            raise PermissionDenied("This key may not use the admin API.", code="not_admin")
        if write and not (principal.admin or principal.role == "admin"):
            raise PermissionDenied("A viewer key may only read.", code="read_only")
        return principal

    def _wrap(
        self, handler: Callable[[web.Request, Principal], Awaitable[web.Response]], write: bool
    ) -> Handler:
        async def run(request: web.Request) -> web.Response:
            try:
                principal = self._principal(request, write=write)
                return await handler(request, principal)
            except QiaoError as err:
                return web.Response(
                    status=err.status, body=error_body(err), content_type="application/json"
                )
            except StorageUnavailable:
                down = Unavailable("The database is unavailable; try again shortly.")
                return web.Response(
                    status=503,
                    body=error_body(down),
                    content_type="application/json",
                    headers={"Retry-After": "2"},
                )

        return run

    def _read(
        self, handler: Callable[[web.Request, Principal], Awaitable[web.Response]]
    ) -> Handler:
        return self._wrap(handler, write=False)

    def _write(
        self, handler: Callable[[web.Request, Principal], Awaitable[web.Response]]
    ) -> Handler:
        return self._wrap(handler, write=True)

    async def _learn(self, key: VirtualKey, old_hash: bytes | None = None) -> None:
        """This node knows a change at once; the others pick it up from the store's change feed."""
        team = await self._store.get_team(key.team_id) if key.team_id else None
        live = principal_for(key, team) if key.revoked_at is None else None
        self._ring.upsert(live, [old_hash] if old_hash else [])

    async def _audit(self, who: Principal, action: str, target: str, **detail: Any) -> None:
        await self._store.audit(
            AuditEntry(actor=who.name, action=action, target=target, detail=detail, at=_now())
        )

    # ------------------------------------------------------------------ misc
    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)

    async def bootstrap(self, request: web.Request) -> web.Response:
        presented = credential_from(request.headers, request.query) or ""
        token = self._bootstrap
        if token is None or not hmac.compare_digest(presented.encode(), token.encode()):
            err = AuthenticationFailed("Invalid or used bootstrap token.")
            return web.Response(status=401, body=error_body(err), content_type="application/json")
        self._bootstrap = None  # one use
        body = _parse(KeyIn, await request.read() or b'{"name": "admin"}')
        secret = new_secret()
        key = self._new_key(body, secret)
        key.role = "admin"
        await self._store.put_key(key)
        await self._learn(key)
        await self._store.audit(
            AuditEntry("bootstrap", "key.create", key.id, {"role": "admin"}, _now())
        )
        return _json({**key_out(key), "key": secret}, 201)

    # ------------------------------------------------------------------ keys
    def _new_key(self, body: KeyIn, secret: str) -> VirtualKey:
        now = _now()
        return VirtualKey(
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

    async def _key(self, request: web.Request) -> VirtualKey:
        key = await self._store.get_key(request.match_info["id"])
        if key is None:
            raise NotFound(f"No key {request.match_info['id']!r}.", code="key_not_found")
        return key

    async def list_keys(self, request: web.Request, who: Principal) -> web.Response:
        keys = await self._store.list_keys(team_id=request.query.get("team_id"))
        return _json({"data": [key_out(k) for k in keys]})

    async def create_key(self, request: web.Request, who: Principal) -> web.Response:
        body: KeyIn = _parse(KeyIn, await request.read())
        if body.team_id and await self._store.get_team(body.team_id) is None:
            raise InvalidRequest(f"No team {body.team_id!r}.", param="team_id")
        secret = new_secret()
        key = self._new_key(body, secret)
        await self._store.put_key(key)
        await self._learn(key)
        await self._audit(who, "key.create", key.id, name=key.name, role=key.role)
        return _json({**key_out(key), "key": secret}, 201)

    async def show_key(self, request: web.Request, who: Principal) -> web.Response:
        return _json(key_out(await self._key(request)))

    async def update_key(self, request: web.Request, who: Principal) -> web.Response:
        key = await self._key(request)
        patch: KeyPatch = _parse(KeyPatch, await request.read())
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
            changes["model_limits"] = {
                m: v.to_limits() for m, v in (patch.model_limits or {}).items()
            }
        if "budget" in given:
            changes["budget"] = patch.budget.to_budget() if patch.budget else None
        updated = replace(key, **changes, updated_at=_now())
        await self._store.put_key(updated)
        await self._learn(updated, key.key_hash)
        await self._audit(who, "key.update", key.id, fields=sorted(changes))
        return _json(key_out(updated))

    async def revoke_key(self, request: web.Request, who: Principal) -> web.Response:
        key = await self._key(request)
        updated = replace(key, revoked_at=key.revoked_at or _now(), updated_at=_now())
        await self._store.put_key(updated)
        self._ring.upsert(None, [key.key_hash])  # this node at once; others within a second
        await self._audit(who, "key.revoke", key.id)
        return _json(key_out(updated))

    async def rotate_key(self, request: web.Request, who: Principal) -> web.Response:
        key = await self._key(request)
        if key.revoked_at is not None:
            raise InvalidRequest("A revoked key cannot be rotated.", code="key_revoked")
        secret = new_secret()
        updated = replace(key, key_hash=digest(secret), hint=hint(secret), updated_at=_now())
        await self._store.put_key(updated)
        await self._learn(updated, key.key_hash)
        await self._audit(who, "key.rotate", key.id)
        return _json({**key_out(updated), "key": secret})

    # ------------------------------------------------------------------ teams
    async def _team(self, request: web.Request) -> Team:
        team = await self._store.get_team(request.match_info["id"])
        if team is None:
            raise NotFound(f"No team {request.match_info['id']!r}.", code="team_not_found")
        return team

    async def list_teams(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [team_out(t) for t in await self._store.list_teams()]})

    async def create_team(self, request: web.Request, who: Principal) -> web.Response:
        body: TeamIn = _parse(TeamIn, await request.read())
        team = Team(
            id="team_" + secrets.token_hex(6),
            name=body.name,
            limits=body.limits.to_limits() if body.limits else Limits(),
            budget=body.budget.to_budget() if body.budget else None,
            metadata=body.metadata,
            created_at=_now(),
        )
        await self._store.put_team(team)
        await self._audit(who, "team.create", team.id, name=team.name)
        return _json(team_out(team), 201)

    async def show_team(self, request: web.Request, who: Principal) -> web.Response:
        return _json(team_out(await self._team(request)))

    async def update_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await self._team(request)
        patch: TeamPatch = _parse(TeamPatch, await request.read())
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
        await self._store.put_team(updated)
        await self._audit(who, "team.update", team.id, fields=sorted(changes))
        return _json(team_out(updated))

    async def delete_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await self._team(request)
        if await self._store.list_keys(team_id=team.id):
            raise InvalidRequest("The team still has keys; move or revoke them first.")
        await self._store.delete_team(team.id)
        await self._audit(who, "team.delete", team.id)
        return _json({"deleted": team.id})

    # ------------------------------------------------------------------ provider secrets
    async def list_secrets(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [secret_out(s) for s in await self._store.list_secrets()]})

    async def put_secret(self, request: web.Request, who: Principal) -> web.Response:
        if self._vault is None:
            raise InvalidRequest(
                "No master key is loaded (set QIAO_MASTER_KEY or QIAO_MASTER_KEY_FILE): "
                "provider keys cannot be stored encrypted.",
                code="no_master_key",
            )
        body: SecretIn = _parse(SecretIn, await request.read())
        name = request.match_info["name"]
        try:
            sealed = self._vault.seal(name, body.api_key)
        except SecretError as exc:
            raise InvalidRequest(str(exc)) from None
        sealed.updated_at = _now()
        await self._store.put_secret(sealed)
        await self._audit(who, "provider_key.set", name, hint=sealed.hint)
        return _json(secret_out(sealed))

    async def delete_secret(self, request: web.Request, who: Principal) -> web.Response:
        name = request.match_info["name"]
        if not await self._store.delete_secret(name):
            raise NotFound(f"No stored key for provider {name!r}.")
        await self._audit(who, "provider_key.delete", name)
        return _json({"deleted": name})

    # ------------------------------------------------------------------ usage and audit
    async def usage(self, request: web.Request, who: Principal) -> web.Response:
        since_text = request.query.get("since")
        try:
            since = datetime.fromisoformat(since_text) if since_text else None
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            raise InvalidRequest("since must be ISO-8601 and limit an integer") from None
        rows = await self._store.list_usage(
            key_id=request.query.get("key_id"), since=since, limit=limit
        )
        return _json({"data": [_usage_out(r) for r in rows]})

    async def audit_log(self, request: web.Request, who: Principal) -> web.Response:
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            raise InvalidRequest("limit must be an integer") from None
        entries = await self._store.list_audit(limit)
        return _json(
            {
                "data": [
                    {
                        "id": e.id,
                        "at": e.at.isoformat() if e.at else None,
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "detail": e.detail,
                    }
                    for e in entries
                ]
            }
        )


def _usage_out(r: Any) -> dict[str, Any]:
    return {
        "attempt_id": r.attempt_id,
        "request_id": r.request_id,
        "key_id": r.key_id,
        "team_id": r.team_id,
        "model": r.model,
        "provider": r.provider,
        "status": r.status,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost": str(r.cost),
        "currency": r.currency,
        "http_status": r.http_status,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
    }
