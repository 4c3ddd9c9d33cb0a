"""The admin REST API under /admin: keys, teams, provider secrets, usage, audit.

Roles: ``admin`` may change things, ``viewer`` may read. The first admin credential comes from
the config (``admin_key``), the environment, or a one-time bootstrap token printed at start-up
when no admin exists — there is no default password. Every change goes to the audit log under
the acting key's id; a created or rotated key is shown once and stored only as its SHA-256 digest.

Callers authenticate as on ``/v1`` (:meth:`~qiao.auth.KeyRing.authenticate_request`: key,
expiry, source address). Every answer, errors included, passes through :meth:`AdminAPI._answer`:
failed authentications are throttled per source (:mod:`.throttle`), the request is written to
the access log, and the answer is marked ``Cache-Control: no-store`` (it may hold a new secret).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..auth import Principal, credential_from, principal_for
from ..errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QiaoError,
    Unavailable,
)
from ..observability.accesslog import RequestRecord
from ..storage.base import StorageUnavailable
from ..storage.models import Team, VirtualKey
from ..surfaces.http import new_request_id, read_body
from ..surfaces.openai import error_body
from . import ops
from .openapi import openapi as openapi_document
from .ops import Actor, new_secret
from .schemas import KeyIn, KeyPatch, SecretIn, TeamIn, TeamPatch, key_out, secret_out, team_out
from .throttle import FailureThrottle

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["AdminAPI", "new_secret"]

Handler = Callable[[web.Request], Awaitable[web.Response]]
Step = Callable[[web.Request, RequestRecord], Awaitable[web.Response]]
Endpoint = Callable[[web.Request, Principal], Awaitable[web.Response]]

MAX_ROWS = 1000  # the most rows one list answer holds
BOOTSTRAP = Actor("bootstrap")


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _error(err: QiaoError) -> web.Response:
    response = web.Response(
        status=err.status, body=error_body(err), content_type="application/json"
    )
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return response


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def _limit(request: web.Request, default: int = 100) -> int:
    """``?limit=``: a positive integer, at most :data:`MAX_ROWS` (more is clamped to it)."""
    text = request.query.get("limit")
    if text is None:
        return default
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InvalidRequest(
            f"limit must be a positive integer (at most {MAX_ROWS} rows are returned).",
            param="limit",
        )
    return min(limit, MAX_ROWS)


def _actor(who: Principal) -> Actor:
    """The audit log's actor: the key's id (names are not unique), and its name at the time."""
    return Actor(who.scope_id, who.name)


class AdminAPI:
    def __init__(self, engine: Engine, throttle: FailureThrottle | None = None) -> None:
        self._store = engine.store
        self._ring = engine.keys
        self._vault = engine.vault
        self._budgets = engine.gate.budgets  # its spend counters may live in this process
        self._log = engine.access_log
        self._providers = frozenset(engine.config.providers)
        self._max_body = engine.config.server.max_body_bytes
        self._body_timeout = engine.config.server.body_timeout
        self._throttle = throttle or FailureThrottle()
        self._bootstrap: str | None = None

    def routes(self) -> list[web.RouteDef]:
        r, w, o = self._read, self._write, self._open
        return [
            web.get("/admin/openapi.json", o(self.openapi)),
            web.post("/admin/bootstrap", o(self.bootstrap)),
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
            web.route("*", "/admin{tail:(/.*)?}", o(self.unknown)),
        ]

    # ------------------------------------------------------------------ every answer
    async def _answer(self, request: web.Request, step: Step) -> web.Response:
        """Run ``step`` with throttling, error rendering, access logging and no-store."""
        rec = RequestRecord(new_request_id(), request.method, request.path, time.perf_counter())
        try:
            response = await self._run(request, rec, step)
        except asyncio.CancelledError:
            rec.status, rec.error = 499, "client_closed"
            raise
        finally:
            self._log.write(rec, time.perf_counter())
        return response

    async def _run(self, request: web.Request, rec: RequestRecord, step: Step) -> web.Response:
        try:
            self._throttle.check(request.remote)
            response = await step(request, rec)
        except QiaoError as err:
            if err.status == 401:
                self._throttle.failed(request.remote, err.code)
            response = _error(err)
            rec.error = err.code or err.type
        except StorageUnavailable:
            response = _error(Unavailable("The database is unavailable; try again shortly."))
            response.headers["Retry-After"] = "2"
            rec.error = "store_unavailable"
        rec.status = response.status
        response.headers["Cache-Control"] = "no-store"
        response.headers["x-request-id"] = rec.request_id
        return response

    def _open(self, handler: Step) -> Handler:
        """An endpoint that checks its own credential (or needs none)."""

        async def run(request: web.Request) -> web.Response:
            return await self._answer(request, handler)

        return run

    def _wrap(self, handler: Endpoint, write: bool) -> Handler:
        async def step(request: web.Request, rec: RequestRecord) -> web.Response:
            return await handler(request, self._principal(request, rec, write=write))

        async def run(request: web.Request) -> web.Response:
            return await self._answer(request, step)

        return run

    def _read(self, handler: Endpoint) -> Handler:
        return self._wrap(handler, write=False)

    def _write(self, handler: Endpoint) -> Handler:
        return self._wrap(handler, write=True)

    # ------------------------------------------------------------------ auth
    def enable_bootstrap(self, token: str | None = None) -> str:
        """A one-time token that may create the first admin key (POST /admin/bootstrap).
        Workers of one ``--workers N`` gateway share the token their parent made."""
        self._bootstrap = token or "qiao-bootstrap-" + secrets.token_urlsafe(24)
        return self._bootstrap

    def _principal(self, request: web.Request, rec: RequestRecord, *, write: bool) -> Principal:
        principal = self._ring.authenticate_request(
            request.headers, request.query, request.remote, rec
        )
        if not (principal.admin or principal.role in ("admin", "viewer")):
            raise PermissionDenied("This key may not use the admin API.", code="not_admin")
        if write and not (principal.admin or principal.role == "admin"):
            raise PermissionDenied("A viewer key may only read.", code="read_only")
        return principal

    async def _body(self, request: web.Request) -> bytes:
        """The request body (b"" when there is none), read as /v1 reads one: within the size
        limit and the body timeout. Its Content-Type is not checked (``curl -d`` sends a form
        type; the admin API takes no ambient credential a browser could lend a web page)."""
        if not request.body_exists:
            return b""
        return await read_body(request, self._max_body, self._body_timeout)

    async def _learn(self, key: VirtualKey, old_hash: bytes | None = None) -> None:
        """This node knows a change at once; the others pick it up from the store's change feed."""
        team = await self._store.get_team(key.team_id) if key.team_id else None
        live = principal_for(key, team) if key.revoked_at is None else None
        self._ring.upsert(live, [old_hash] if old_hash else [])

    # ------------------------------------------------------------------ misc
    async def openapi(self, request: web.Request, rec: RequestRecord) -> web.Response:
        return _json(openapi_document())

    async def unknown(self, request: web.Request, rec: RequestRecord) -> web.Response:
        raise NotFound(f"Invalid URL ({request.method} {request.path})", code="unknown_url")

    def _bootstrap_token(self, request: web.Request) -> str:
        """The bootstrap token, if ``request`` presents it (else 401)."""
        presented = credential_from(request.headers, request.query) or ""
        token = self._bootstrap
        if token is None or not hmac.compare_digest(presented.encode(), token.encode()):
            raise AuthenticationFailed("Invalid or used bootstrap token.")
        return token

    async def bootstrap(self, request: web.Request, rec: RequestRecord) -> web.Response:
        """The first admin key. A bad body is a 400 that leaves the token usable: the token is
        spent only on a created key (or when an admin exists already)."""
        self._bootstrap_token(request)  # before reading any body
        rec.key = BOOTSTRAP.id
        body: KeyIn = _parse(KeyIn, await self._body(request) or b'{"name": "admin"}')
        token = self._bootstrap_token(request)  # again: another request may have used it since
        self._bootstrap = None  # no await since the check: a concurrent request sees it gone
        try:
            issued = await self._first_admin(body)
        except BaseException:
            self._bootstrap = token  # no key was made: the token still works
            raise
        if issued is None:
            raise AuthenticationFailed("An admin key exists already: bootstrap is closed.")
        await self._learn(issued.key)
        return _json({**key_out(issued.key), "key": issued.secret}, 201)

    async def _first_admin(self, body: KeyIn) -> ops.Issued | None:
        """A new admin key, unless the store has one (made by another worker or node)."""
        if any(k.role == "admin" and k.revoked_at is None for k in await self._store.list_keys()):
            return None
        return await ops.create_key(
            self._store, BOOTSTRAP, body.model_copy(update={"role": "admin"})
        )

    # ------------------------------------------------------------------ keys
    async def list_keys(self, request: web.Request, who: Principal) -> web.Response:
        keys = await self._store.list_keys(team_id=request.query.get("team_id"))
        return _json({"data": [key_out(k) for k in keys]})

    async def create_key(self, request: web.Request, who: Principal) -> web.Response:
        body: KeyIn = _parse(KeyIn, await self._body(request))
        issued = await ops.create_key(self._store, _actor(who), body)
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
        patch: KeyPatch = _parse(KeyPatch, await self._body(request))
        updated = await ops.update_key(self._store, _actor(who), request.match_info["id"], patch)
        await self._learn(updated, updated.key_hash)  # an update keeps the digest
        return _json(key_out(updated))

    async def revoke_key(self, request: web.Request, who: Principal) -> web.Response:
        updated = await ops.revoke_key(self._store, _actor(who), request.match_info["id"])
        self._ring.upsert(None, [updated.key_hash])  # this node at once; others within a second
        return _json(key_out(updated))

    async def rotate_key(self, request: web.Request, who: Principal) -> web.Response:
        issued = await ops.rotate_key(self._store, _actor(who), request.match_info["id"])
        await self._learn(issued.key, issued.old_hash)
        return _json({**key_out(issued.key), "key": issued.secret})

    async def reset_key_budget(self, request: web.Request, who: Principal) -> web.Response:
        key_id = request.match_info["id"]
        key = await ops.reset_key_budget(self._store, self._budgets, _actor(who), key_id)
        return _json(await self._key_with_status(key))

    # ------------------------------------------------------------------ teams
    async def list_teams(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [team_out(t) for t in await self._store.list_teams()]})

    async def create_team(self, request: web.Request, who: Principal) -> web.Response:
        body: TeamIn = _parse(TeamIn, await self._body(request))
        return _json(team_out(await ops.create_team(self._store, _actor(who), body)), 201)

    async def show_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await ops.get_team(self._store, request.match_info["id"])
        return _json(await self._team_with_status(team))

    async def update_team(self, request: web.Request, who: Principal) -> web.Response:
        patch: TeamPatch = _parse(TeamPatch, await self._body(request))
        team = await ops.update_team(self._store, _actor(who), request.match_info["id"], patch)
        return _json(team_out(team))

    async def delete_team(self, request: web.Request, who: Principal) -> web.Response:
        team = await ops.delete_team(self._store, _actor(who), request.match_info["id"])
        return _json({"deleted": team.id})

    async def reset_team_budget(self, request: web.Request, who: Principal) -> web.Response:
        team_id = request.match_info["id"]
        team = await ops.reset_team_budget(self._store, self._budgets, _actor(who), team_id)
        return _json(await self._team_with_status(team))

    # ------------------------------------------------------------------ provider secrets
    async def list_secrets(self, request: web.Request, who: Principal) -> web.Response:
        return _json({"data": [secret_out(s) for s in await self._store.list_secrets()]})

    async def put_secret(self, request: web.Request, who: Principal) -> web.Response:
        if self._vault is None:  # before reading the body, as a missing master is the answer
            raise InvalidRequest(ops.NO_MASTER_KEY, code="no_master_key")
        name = request.match_info["name"]
        if name not in self._providers:  # a typo would store a key nothing ever uses
            known = ", ".join(sorted(self._providers)) or "none"
            raise NotFound(
                f"No provider {name!r} in the config (providers: {known}); a stored key is "
                "used by the configured provider of that name.",
                code="provider_not_found",
            )
        body: SecretIn = _parse(SecretIn, await self._body(request))
        sealed = await ops.set_provider_key(self._store, _actor(who), self._vault, name, body)
        return _json(secret_out(sealed))

    async def delete_secret(self, request: web.Request, who: Principal) -> web.Response:
        name = request.match_info["name"]
        await ops.delete_provider_key(self._store, _actor(who), name)
        return _json({"deleted": name})

    # ------------------------------------------------------------------ usage and audit
    async def usage(self, request: web.Request, who: Principal) -> web.Response:
        since_text = request.query.get("since")
        try:
            since = datetime.fromisoformat(since_text) if since_text else None
        except ValueError:
            raise InvalidRequest("since must be an ISO-8601 date-time", param="since") from None
        rows = await self._store.list_usage(
            key_id=request.query.get("key_id"), since=since, limit=_limit(request)
        )
        return _json({"data": [_usage_out(r) for r in rows]})

    async def audit_log(self, request: web.Request, who: Principal) -> web.Response:
        limit = _limit(request)
        entries = await self._store.list_audit(limit)
        return _json(
            {
                "data": [
                    {
                        "id": e.id,
                        "at": e.at.isoformat() if e.at else None,
                        "actor": e.actor,
                        "actor_name": e.actor_name,
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
