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
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..auth import KeyRing, Principal, credential_from, principal_for
from ..errors import AuthenticationFailed, InvalidRequest, PermissionDenied, QiaoError, Unavailable
from ..policies.budget import BudgetGuard
from ..secrets import Vault
from ..storage.base import StorageUnavailable, Store
from ..storage.models import Team, VirtualKey
from ..surfaces.openai import error_body
from . import ops
from .openapi import openapi as openapi_document
from .ops import new_secret
from .schemas import KeyIn, KeyPatch, SecretIn, TeamIn, TeamPatch, key_out, secret_out, team_out

__all__ = ["AdminAPI", "new_secret"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


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
    def __init__(
        self, store: Store, ring: KeyRing, vault: Vault | None, budgets: BudgetGuard
    ) -> None:
        self._store = store
        self._ring = ring
        self._vault = vault
        self._budgets = budgets  # the gateway's own: its spend counters may live in this process
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
            web.post("/admin/keys/{id}/budget/reset", w(self.reset_key_budget)),
            web.get("/admin/teams", r(self.list_teams)),
            web.post("/admin/teams", w(self.create_team)),
            web.get("/admin/teams/{id}", r(self.show_team)),
            web.patch("/admin/teams/{id}", w(self.update_team)),
            web.delete("/admin/teams/{id}", w(self.delete_team)),
            web.post("/admin/teams/{id}/budget/reset", w(self.reset_team_budget)),
            web.get("/admin/providers", r(self.list_secrets)),
            web.put("/admin/providers/{name}/key", w(self.put_secret)),
            web.delete("/admin/providers/{name}/key", w(self.delete_secret)),
            web.get("/admin/usage", r(self.usage)),
            web.get("/admin/audit", r(self.audit_log)),
        ]

    # ------------------------------------------------------------------ auth
    def enable_bootstrap(self, token: str | None = None) -> str:
        """A one-time token that may create the first admin key (POST /admin/bootstrap).
        Workers of one ``--workers N`` gateway share the token their parent made."""
        self._bootstrap = token or "qiao-bootstrap-" + secrets.token_urlsafe(24)
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

    # ------------------------------------------------------------------ misc
    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def bootstrap(self, request: web.Request) -> web.Response:
        presented = credential_from(request.headers, request.query) or ""
        token = self._bootstrap
        if token is None or not hmac.compare_digest(presented.encode(), token.encode()):
            err = AuthenticationFailed("Invalid or used bootstrap token.")
            return web.Response(status=401, body=error_body(err), content_type="application/json")
        self._bootstrap = None  # one use here; the store check below covers the other workers
        keys = await self._store.list_keys()
        if any(k.role == "admin" and k.revoked_at is None for k in keys):
            err = AuthenticationFailed("An admin key exists already: bootstrap is closed.")
            return web.Response(status=401, body=error_body(err), content_type="application/json")
        body: KeyIn = _parse(KeyIn, await request.read() or b'{"name": "admin"}')
        issued = await ops.create_key(
            self._store, "bootstrap", body.model_copy(update={"role": "admin"})
        )
        await self._learn(issued.key)
        return _json({**key_out(issued.key), "key": issued.secret}, 201)

    # ------------------------------------------------------------------ keys
    async def list_keys(self, request: web.Request, who: Principal) -> web.Response:
        keys = await self._store.list_keys(team_id=request.query.get("team_id"))
        return _json({"data": [key_out(k) for k in keys]})

    async def create_key(self, request: web.Request, who: Principal) -> web.Response:
        body: KeyIn = _parse(KeyIn, await request.read())
        issued = await ops.create_key(self._store, who.name, body)
        await self._learn(issued.key)
        return _json({**key_out(issued.key), "key": issued.secret}, 201)

    async def _key_with_status(self, key: VirtualKey) -> dict[str, Any]:
        """A key as shown alone: with its budget's ``budget_status`` (null: unknown now)."""
        out = key_out(key)
        if key.budget is not None:
            out["budget_status"] = await ops.budget_status(
                self._budgets, ops.key_scope(key), key.budget
            )
        return out

    async def _team_with_status(self, team: Team) -> dict[str, Any]:
        out = team_out(team)
        if team.budget is not None:
            out["budget_status"] = await ops.budget_status(
                self._budgets, ops.team_scope(team), team.budget
            )
        return out

    async def show_key(self, request: web.Request, who: Principal) -> web.Response:
        key = await ops.get_key(self._store, request.match_info["id"])
        return _json(await self._key_with_status(key))

    async def update_key(self, request: web.Request, who: Principal) -> web.Response:
        patch: KeyPatch = _parse(KeyPatch, await request.read())
        updated = await ops.update_key(self._store, who.name, request.match_info["id"], patch)
        await self._learn(updated, updated.key_hash)  # an update keeps the digest
        return _json(key_out(updated))

    async def revoke_key(self, request: web.Request, who: Principal) -> web.Response:
        updated = await ops.revoke_key(self._store, who.name, request.match_info["id"])
        self._ring.upsert(None, [updated.key_hash])  # this node at once; others within a second
        return _json(key_out(updated))

    async def rotate_key(self, request: web.Request, who: Principal) -> web.Response:
        issued = await ops.rotate_key(self._store, who.name, request.match_info["id"])
        await self._learn(issued.key, issued.old_hash)
        return _json({**key_out(issued.key), "key": issued.secret})

    async def reset_key_budget(self, request: web.Request, who: Principal) -> web.Response:
        key_id = request.match_info["id"]
        key = await ops.reset_key_budget(self._store, self._budgets, who.name, key_id)
        return _json(await self._key_with_status(key))

    # ------------------------------------------------------------------ teams
    async def list_teams(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [team_out(t) for t in await self._store.list_teams()]})

    async def create_team(self, request: web.Request, who: Principal) -> web.Response:
        body: TeamIn = _parse(TeamIn, await request.read())
        return _json(team_out(await ops.create_team(self._store, who.name, body)), 201)

    async def show_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await ops.get_team(self._store, request.match_info["id"])
        return _json(await self._team_with_status(team))

    async def update_team(self, request: web.Request, who: Principal) -> web.Response:
        patch: TeamPatch = _parse(TeamPatch, await request.read())
        team = await ops.update_team(self._store, who.name, request.match_info["id"], patch)
        return _json(team_out(team))

    async def delete_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await ops.delete_team(self._store, who.name, request.match_info["id"])
        return _json({"deleted": team.id})

    async def reset_team_budget(self, request: web.Request, who: Principal) -> web.Response:
        team_id = request.match_info["id"]
        team = await ops.reset_team_budget(self._store, self._budgets, who.name, team_id)
        return _json(await self._team_with_status(team))

    # ------------------------------------------------------------------ provider secrets
    async def list_secrets(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [secret_out(s) for s in await self._store.list_secrets()]})

    async def put_secret(self, request: web.Request, who: Principal) -> web.Response:
        if self._vault is None:  # before reading the body, as a missing master is the answer
            raise InvalidRequest(ops.NO_MASTER_KEY, code="no_master_key")
        body: SecretIn = _parse(SecretIn, await request.read())
        name = request.match_info["name"]
        sealed = await ops.set_provider_key(self._store, who.name, self._vault, name, body)
        return _json(secret_out(sealed))

    async def delete_secret(self, request: web.Request, who: Principal) -> web.Response:
        name = request.match_info["name"]
        await ops.delete_provider_key(self._store, who.name, name)
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
