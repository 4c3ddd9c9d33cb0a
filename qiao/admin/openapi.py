"""The OpenAPI 3.1 document of the admin API, built from the request models."""

from __future__ import annotations

import functools
from typing import Any

from .schemas import KeyIn, KeyPatch, SecretIn, TeamIn, TeamPatch

__all__ = ["openapi"]


def _body(model: Any) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": model.model_json_schema()}},
    }


_OK = {"200": {"description": "OK"}}
_CREATED = {"201": {"description": "Created; the secret key is in `key`, shown this once"}}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_LIMIT = {
    "name": "limit",
    "in": "query",
    "description": "rows to return (default 100); more than 1000 returns 1000, below 1 is a 400",
    "schema": {"type": "integer", "minimum": 1},
}


_DATE_TIME = {"type": "string", "format": "date-time"}
_DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}
_BUDGET_STATUS = {
    "type": "object",
    "description": "How much of the budget its current UTC period has used, reservations of "
    "requests in flight included. Shown only when there is a budget; null when the spend "
    "ledger (the store or Redis) cannot be read just now.",
    "properties": {
        "spent": _DECIMAL,
        "remaining": {**_DECIMAL, "description": "amount - spent, never below zero"},
        "currency": {"enum": ["USD", "CNY", "tokens"]},
        "period": {"enum": ["day", "week", "month", "total"]},
        "period_start": _DATE_TIME,
        "period_end": {
            "anyOf": [_DATE_TIME, {"type": "null"}],
            "description": "null for a total budget (a prepaid quota): it never resets",
        },
    },
    "required": ["spent", "remaining", "currency", "period", "period_start", "period_end"],
}


def _shown(what: str) -> dict[str, Any]:
    status = {"anyOf": [{"$ref": "#/components/schemas/BudgetStatus"}, {"type": "null"}]}
    schema = {"type": "object", "properties": {"budget_status": status}}
    return {
        "200": {
            "description": f"The {what}, with `budget_status` when it has a budget",
            "content": {"application/json": {"schema": schema}},
        }
    }


def _reset(what: str) -> dict[str, Any]:
    return {
        **_shown(what),
        "400": {"description": f"The {what} has no budget (code `no_budget`)"},
        "404": {"description": f"No such {what}"},
    }


def _op(summary: str, responses: dict[str, Any] = _OK, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


@functools.cache
def openapi() -> dict[str, Any]:
    """Built on first request: the request models' JSON schemas cost memory at start-up."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Qiao admin API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"BudgetStatus": _BUDGET_STATUS},
        },
        "security": [{"bearer": []}],
        "description": "Every answer is `Cache-Control: no-store`. After 10 failed "
        "authentications (401) in a minute, a source address gets 429 with `Retry-After` "
        "on every /admin request until the minute is over.",
        "paths": {
            "/admin/bootstrap": {
                "post": _op(
                    "Create the first admin key with the one-time bootstrap token",
                    _CREATED,
                    requestBody=_body(KeyIn),
                )
            },
            "/admin/keys": {
                "get": _op(
                    "List virtual keys (hints only)",
                    parameters=[{"name": "team_id", "in": "query", "schema": {"type": "string"}}],
                ),
                "post": _op("Create a virtual key", _CREATED, requestBody=_body(KeyIn)),
            },
            "/admin/keys/{id}": {
                "get": _op("Show a key and its budget status", _shown("key"), parameters=_ID),
                "patch": _op("Update a key", parameters=_ID, requestBody=_body(KeyPatch)),
            },
            "/admin/keys/{id}/revoke": {
                "post": _op("Revoke a key (all nodes within ~1 s)", parameters=_ID)
            },
            "/admin/keys/{id}/rotate": {
                "post": _op("Replace a key's secret; the old one stops working", parameters=_ID)
            },
            "/admin/keys/{id}/budget/reset": {
                "post": _op(
                    "Zero the spend of the key's current budget period (audited)",
                    _reset("key"),
                    parameters=_ID,
                )
            },
            "/admin/teams": {
                "get": _op("List teams"),
                "post": _op(
                    "Create a team", {"201": {"description": "Created"}}, requestBody=_body(TeamIn)
                ),
            },
            "/admin/teams/{id}": {
                "get": _op("Show a team and its budget status", _shown("team"), parameters=_ID),
                "patch": _op("Update a team", parameters=_ID, requestBody=_body(TeamPatch)),
                "delete": _op("Delete an empty team", parameters=_ID),
            },
            "/admin/teams/{id}/budget/reset": {
                "post": _op(
                    "Zero the spend of the team's current budget period (audited)",
                    _reset("team"),
                    parameters=_ID,
                )
            },
            "/admin/providers": {"get": _op("Stored provider keys (masked hints only)")},
            "/admin/providers/{name}/key": {
                "put": _op(
                    "Store a provider key, encrypted with AES-256-GCM",
                    {**_OK, "404": {"description": "No provider of that name in the config"}},
                    parameters=_NAME,
                    requestBody=_body(SecretIn),
                ),
                "delete": _op("Delete a stored provider key", parameters=_NAME),
            },
            "/admin/usage": {
                "get": _op(
                    "Usage records",
                    parameters=[
                        {"name": "key_id", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "since",
                            "in": "query",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        _LIMIT,
                    ],
                )
            },
            "/admin/audit": {
                "get": _op(
                    "The audit log, newest first",
                    parameters=[_LIMIT],
                )
            },
        },
    }
