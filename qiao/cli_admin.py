"""The admin commands of ``qiao``: ``db``, ``keys``, ``teams``, ``providers``.

They work on the store directly (``--config FILE``'s ``storage.url``, or ``--db URL``), through
the same operations as the admin API (:mod:`qiao.admin.ops`), audited as actor ``cli``; a
running gateway picks changes up from the store within its ``sync_interval``. Secrets are
printed once and never taken from argv: a provider key comes from stdin or a prompt. Each
command first brings the schema up to date, as the gateway does at start-up (idempotent). Every
error is a message on stderr and exit code 2, never a traceback.

Budget spend is the exception, as a running gateway may hold its counters in memory (one
process on SQLite writes them behind, every half second). ``show`` reads the spend where the
gateway writes it (Redis when ``storage.redis_url`` is set, else the store), so it may lag by
that much; ``budget-reset`` asks the gateway itself (``POST /admin/…/budget/reset`` at ``--url``
or the config's ``listen``, with ``QIAO_ADMIN_KEY`` or the config's ``admin_key``) and resets
in the store or Redis directly, as actor ``cli``, only when no gateway answers there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from pydantic import ValidationError

from .admin import ops
from .admin.schemas import (
    KeyIn,
    KeyPatch,
    SecretIn,
    TeamIn,
    TeamPatch,
    key_out,
    secret_out,
    team_out,
)
from .cli_forms import (
    CliError,
    describe,
    key_fields,
    key_options,
    print_json,
    print_table,
    show,
    team_fields,
    team_options,
)
from .config import Config, ConfigError, StorageSettings, load
from .errors import QiaoError
from .policies.budget import BudgetGuard
from .secrets import MASTER_KEY_ENV, MasterKey, SecretError, Vault
from .storage import StorageUnavailable, Store, open_store
from .storage.models import Budget, Limits, VirtualKey

__all__ = ["COMMANDS", "add_commands", "run"]

COMMANDS = frozenset({"db", "keys", "teams", "providers"})
ACTOR = ops.Actor("cli")
ADMIN_KEY_ENV = "QIAO_ADMIN_KEY"
StoreAction = Callable[[argparse.Namespace, Store], Awaitable[None]]

if TYPE_CHECKING:
    _Group = argparse._SubParsersAction[argparse.ArgumentParser]


# ---------------------------------------------------------------------- the parser


def add_commands(sub: _Group) -> None:
    """Register ``db``, ``keys``, ``teams`` and ``providers`` on the ``qiao`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=os.environ.get("QIAO_CONFIG"), help="YAML config (storage.url)"
    )
    common.add_argument("--db", help="database URL (sqlite:///PATH, postgresql://...)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    def leaf(group: _Group, name: str, action: StoreAction, text: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, parents=[common], help=text)
        p.set_defaults(store_action=action)
        return p

    db = sub.add_parser("db", help="database tools").add_subparsers(dest="sub", required=True)
    leaf(db, "migrate", _db_migrate, "create or upgrade the schema")

    keys = sub.add_parser("keys", help="virtual keys").add_subparsers(dest="sub", required=True)
    key_options(leaf(keys, "create", _keys_create, "create a key (its secret is shown once)"))
    leaf(keys, "list", _keys_list, "list keys (hints only)").add_argument("--team")
    for name, action, text in (
        ("show", _keys_show, "show a key"),
        ("revoke", _keys_revoke, "revoke a key"),
        ("rotate", _keys_rotate, "give a key a new secret (shown once)"),
    ):
        leaf(keys, name, action, text).add_argument("id")
    _url_option(leaf(keys, "budget-reset", _keys_budget_reset, _RESET_HELP % "key")).add_argument(
        "id"
    )
    update = leaf(keys, "update", _keys_update, "change a key")
    update.add_argument("id")
    key_options(update, for_update=True)
    init = keys.add_parser("init-master", help="generate a master key for provider keys")
    init.add_argument("--file", help="write it to this new 0600 file instead of printing it")
    init.set_defaults(local_action=_init_master)
    rotate = leaf(keys, "rotate-master", _rotate_master, "re-encrypt provider keys")
    rotate.set_defaults(prepare=_load_masters)
    old = rotate.add_mutually_exclusive_group(required=True)
    old.add_argument("--old-key-file", help="file holding the previous master key")
    old.add_argument("--old-key-env", help="environment variable holding the previous master key")

    teams = sub.add_parser("teams", help="teams").add_subparsers(dest="sub", required=True)
    team_options(leaf(teams, "create", _teams_create, "create a team"))
    leaf(teams, "list", _teams_list, "list teams")
    leaf(teams, "show", _teams_show, "show a team (id or name)").add_argument("team")
    leaf(teams, "delete", _teams_delete, "delete a team without keys").add_argument("team")
    treset = leaf(teams, "budget-reset", _teams_budget_reset, _RESET_HELP % "team")
    _url_option(treset).add_argument("team")
    tupdate = leaf(teams, "update", _teams_update, "change a team")
    tupdate.add_argument("team")
    team_options(tupdate, for_update=True)

    providers = sub.add_parser("providers", help="provider keys stored encrypted")
    psub = providers.add_subparsers(dest="sub", required=True)
    put = leaf(psub, "set-key", _providers_set, "store a provider key (stdin or a prompt)")
    put.add_argument("name")
    put.set_defaults(prepare=_read_provider_key)
    leaf(psub, "delete-key", _providers_delete, "delete a stored provider key").add_argument("name")
    leaf(psub, "list", _providers_list, "list stored provider keys (hints only)")


_RESET_HELP = "zero the spend of the %s's current budget period"


def _url_option(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--url",
        help="the running gateway, which holds the live spend (default: the config's listen)",
    )
    return p


# ---------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    """Run an admin command; 2 on any error, with a one-line reason on stderr."""
    try:
        local = getattr(args, "local_action", None)
        if local is not None:
            local(args)
            return 0
        prepare = getattr(args, "prepare", None)
        if prepare is not None:
            prepare(args)  # master keys and prompts: their mistakes need no database
        asyncio.run(_with_store(args))
        return 0
    except ValidationError as exc:
        _fail(describe(exc))
    except QiaoError as exc:
        _fail(exc.message)
    except ConfigError as exc:
        _fail(f"configuration error:\n{exc}")
    except StorageUnavailable as exc:
        _fail(str(exc).splitlines()[0])  # not the driver's "Background on this error" link
    except (CliError, SecretError, ValueError, OSError) as exc:
        _fail(str(exc))
    return 2


def _fail(message: str) -> None:
    print(f"qiao: {message}", file=sys.stderr)


async def _with_store(args: argparse.Namespace) -> None:
    store = open_store(_store_url(args))
    try:
        await store.migrate()  # as the gateway does at start-up: upgrade-only, idempotent
        await args.store_action(args, store)
    finally:
        await store.close()


def _store_url(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    config = _config(args)
    if config is not None:
        return config.storage.url
    url = StorageSettings().url
    print(f"qiao: no --config or --db given; using {url}", file=sys.stderr)
    return url


def _config(args: argparse.Namespace) -> Config | None:
    """The ``--config`` file, read once; None with ``--db`` (the store alone) or neither."""
    if args.db or not args.config:
        return None
    loaded: Config | None = getattr(args, "loaded_config", None)
    if loaded is None:
        loaded = args.loaded_config = load(args.config)
    return loaded


# ---------------------------------------------------------------------- db, keys


async def _db_migrate(args: argparse.Namespace, store: Store) -> None:
    show(args, {"schema": "up to date"})  # _with_store migrated it


def _print_issued(args: argparse.Namespace, issued: ops.Issued) -> None:
    if args.json:
        print_json({**key_out(issued.key), "key": issued.secret})
    else:
        print(f"id   {issued.key.id}\nkey  {issued.secret}")
    print("qiao: the key is shown only this once; Qiao keeps just its digest", file=sys.stderr)


async def _key_fields(
    args: argparse.Namespace, store: Store, current: VirtualKey | None
) -> dict[str, object]:
    fields = key_fields(args, current)
    if args.team is not None:  # an id or a unique name
        fields["team_id"] = (await ops.find_team(store, args.team)).id
    return fields


async def _keys_create(args: argparse.Namespace, store: Store) -> None:
    body = KeyIn.model_validate(await _key_fields(args, store, None))
    _print_issued(args, await ops.create_key(store, ACTOR, body))


def _status(key: VirtualKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


async def _keys_list(args: argparse.Namespace, store: Store) -> None:
    team_id = (await ops.find_team(store, args.team)).id if args.team else None
    keys = await store.list_keys(team_id=team_id)
    if args.json:
        print_json({"data": [key_out(k) for k in keys]})
        return
    now = datetime.now(UTC)
    rows = [
        [k.id, k.name, k.team_id or "-", k.role, k.hint, ",".join(k.models), _status(k, now)]
        for k in keys
    ]
    print_table(["ID", "NAME", "TEAM", "ROLE", "HINT", "MODELS", "STATUS"], rows)


async def _keys_show(args: argparse.Namespace, store: Store) -> None:
    key = await ops.get_key(store, args.id)
    show(args, await _with_status(args, store, key_out(key), ops.key_scope(key), key.budget))


async def _keys_update(args: argparse.Namespace, store: Store) -> None:
    fields = await _key_fields(args, store, await ops.get_key(store, args.id))
    if not fields:
        raise CliError("nothing to change: give at least one option (see --help)")
    updated = await ops.update_key(store, ACTOR, args.id, KeyPatch.model_validate(fields))
    show(args, key_out(updated))


async def _keys_revoke(args: argparse.Namespace, store: Store) -> None:
    show(args, key_out(await ops.revoke_key(store, ACTOR, args.id)))


async def _keys_rotate(args: argparse.Namespace, store: Store) -> None:
    _print_issued(args, await ops.rotate_key(store, ACTOR, args.id))


def _init_master(args: argparse.Namespace) -> None:
    key = MasterKey.generate()
    if args.file:
        key.write_file(Path(args.file))
        print(f"wrote master key {key.key_id} to {args.file}; use QIAO_MASTER_KEY_FILE={args.file}")
        return
    print(key.to_text())
    print(
        f"qiao: master key {key.key_id}, shown only this once: keep it safe and set it as "
        f"{MASTER_KEY_ENV}",
        file=sys.stderr,
    )


def _current_master() -> MasterKey:
    master = MasterKey.from_environ(os.environ)
    if master is None:
        raise CliError(ops.NO_MASTER_KEY)
    return master


def _load_masters(args: argparse.Namespace) -> None:
    """The current master (environment) and the previous one (--old-key-file/-env)."""
    current = _current_master()
    if args.old_key_file:
        old = MasterKey.from_file(Path(args.old_key_file))
    else:
        text = os.environ.get(args.old_key_env)
        if not text:
            raise CliError(f"--old-key-env: {args.old_key_env} is not set")
        old = MasterKey.from_text(text, source=args.old_key_env)
    if old == current:
        raise CliError("the old master key is the current one: nothing to rotate")
    args.vault = Vault(current, [old])


async def _rotate_master(args: argparse.Namespace, store: Store) -> None:
    vault: Vault = args.vault
    done = await ops.rotate_master(store, ACTOR, vault)
    if args.json:
        print_json({"master_key_id": vault.key_id, "data": [secret_out(s) for s in done]})
    else:
        print(f"re-encrypted {len(done)} provider keys under master key {vault.key_id}")


# ---------------------------------------------------------------------- teams, providers


async def _teams_create(args: argparse.Namespace, store: Store) -> None:
    fields = team_fields(args, Limits(), None)
    show(args, team_out(await ops.create_team(store, ACTOR, TeamIn.model_validate(fields))))


async def _teams_list(args: argparse.Namespace, store: Store) -> None:
    teams = await store.list_teams()
    if args.json:
        print_json({"data": [team_out(t) for t in teams]})
        return
    rows = []
    for t in teams:
        rates = (
            ("rpm", t.limits.rpm),
            ("tpm", t.limits.tpm),
            ("concurrency", t.limits.concurrency),
        )
        limits = " ".join(f"{k}={v}" for k, v in rates if v is not None) or "-"
        b = t.budget
        budget = f"{b.amount} {b.currency}/{b.period}{'' if b.hard else ' soft'}" if b else "-"
        rows.append([t.id, t.name, limits, budget])
    print_table(["ID", "NAME", "LIMITS", "BUDGET"], rows)


async def _teams_show(args: argparse.Namespace, store: Store) -> None:
    team = await ops.find_team(store, args.team)
    show(args, await _with_status(args, store, team_out(team), ops.team_scope(team), team.budget))


async def _teams_update(args: argparse.Namespace, store: Store) -> None:
    team = await ops.find_team(store, args.team)
    fields = team_fields(args, team.limits, team.budget)
    if not fields:
        raise CliError("nothing to change: give at least one option (see --help)")
    patch = TeamPatch.model_validate(fields)
    show(args, team_out(await ops.update_team(store, ACTOR, team.id, patch)))


async def _teams_delete(args: argparse.Namespace, store: Store) -> None:
    team = await ops.delete_team(store, ACTOR, (await ops.find_team(store, args.team)).id)
    show(args, {"deleted": team.id})


# ---------------------------------------------------------------------- budget spend


@contextlib.asynccontextmanager
async def _spend(args: argparse.Namespace, store: Store) -> AsyncIterator[BudgetGuard]:
    """The spend counters where the gateway keeps them: Redis if configured, else the store."""
    config = _config(args)
    if config is None or not config.storage.redis_url:
        yield BudgetGuard(store)
        return
    from redis.asyncio import Redis  # only when configured, as in the gateway

    from .policies.redis_spend import RedisSpendLedger

    client = Redis.from_url(config.storage.redis_url)
    try:
        yield BudgetGuard(RedisSpendLedger(client, timeout=config.storage.redis_timeout))
    finally:
        await client.aclose()


async def _with_status(
    args: argparse.Namespace,
    store: Store,
    record: dict[str, Any],
    scope: str,
    budget: Budget | None,
) -> dict[str, Any]:
    """``record`` with its ``budget_status``, as ``GET /admin/keys/{id}`` shows it."""
    if budget is not None:
        async with _spend(args, store) as guard:
            record["budget_status"] = await ops.budget_status(guard, scope, budget)
    return record


def _gateway_url(args: argparse.Namespace) -> str | None:
    if args.url:
        return str(args.url).rstrip("/")
    config = _config(args)
    if config is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)  # noqa: S104
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}"


def _admin_credential(args: argparse.Namespace) -> str | None:
    from_env = os.environ.get(ADMIN_KEY_ENV)
    if from_env:
        return from_env.strip()
    config = _config(args)
    if config is not None and config.admin_key is not None:
        return config.admin_key.get_secret_value()
    return None


async def _reset_on_gateway(args: argparse.Namespace, path: str) -> dict[str, Any] | None:
    """``POST path`` on the running gateway: the record it answers, or None when no gateway
    answers (nothing listens there)."""
    url = _gateway_url(args)
    if url is None:
        return None
    credential = _admin_credential(args)
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url + path, headers=headers) as resp,
        ):
            status, raw = resp.status, await resp.read()
    except aiohttp.ClientConnectorError:
        print(f"qiao: no gateway answers at {url}; resetting the spend directly", file=sys.stderr)
        return None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"the gateway at {url}: {type(exc).__name__}: {exc}") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise CliError(f"the gateway at {url} answered {status} without a JSON object")
    if status == 200:
        return body
    error = body.get("error")
    message = str(error.get("message")) if isinstance(error, dict) else f"HTTP {status}"
    if status in (401, 403):
        raise CliError(
            f"the gateway at {url} refused: {message} "
            f"(set {ADMIN_KEY_ENV} to an admin key, or admin_key in the config)"
        )
    if status >= 500:
        raise CliError(f"the gateway at {url} answered {status}: {message}")
    raise CliError(message)


async def _keys_budget_reset(args: argparse.Namespace, store: Store) -> None:
    path = f"/admin/keys/{urllib.parse.quote(args.id, safe='')}/budget/reset"
    shown = await _reset_on_gateway(args, path)
    if shown is None:
        async with _spend(args, store) as guard:
            key = await ops.reset_key_budget(store, guard, ACTOR, args.id)
            shown = key_out(key)
            if key.budget is not None:
                shown["budget_status"] = await ops.budget_status(
                    guard, ops.key_scope(key), key.budget
                )
    show(args, shown)


async def _teams_budget_reset(args: argparse.Namespace, store: Store) -> None:
    team_id = (await ops.find_team(store, args.team)).id  # an id or a unique name
    path = f"/admin/teams/{urllib.parse.quote(team_id, safe='')}/budget/reset"
    shown = await _reset_on_gateway(args, path)
    if shown is None:
        async with _spend(args, store) as guard:
            team = await ops.reset_team_budget(store, guard, ACTOR, team_id)
            shown = team_out(team)
            if team.budget is not None:
                shown["budget_status"] = await ops.budget_status(
                    guard, ops.team_scope(team), team.budget
                )
    show(args, shown)


def _read_provider_key(args: argparse.Namespace) -> None:
    """From stdin when it is piped, else a prompt that does not echo — never from argv."""
    config = _config(args)
    if config is not None and args.name not in config.providers:  # as PUT /admin/providers/…
        known = ", ".join(sorted(config.providers)) or "none"
        raise CliError(f"no provider {args.name!r} in {args.config} (configured: {known})")
    args.vault = Vault(_current_master())  # first: without a master, asking is pointless
    if sys.stdin is None:
        raise CliError("no stdin to read the provider key from")
    try:
        if sys.stdin.isatty():
            text = getpass.getpass(f"API key for provider {args.name!r} (not echoed): ")
        else:
            text = sys.stdin.read()
    except EOFError:
        text = ""
    args.body = SecretIn.model_validate({"api_key": text.strip()})


async def _providers_set(args: argparse.Namespace, store: Store) -> None:
    sealed = await ops.set_provider_key(store, ACTOR, args.vault, args.name, args.body)
    show(args, secret_out(sealed))


async def _providers_delete(args: argparse.Namespace, store: Store) -> None:
    await ops.delete_provider_key(store, ACTOR, args.name)
    show(args, {"deleted": args.name})


async def _providers_list(args: argparse.Namespace, store: Store) -> None:
    stored = await store.list_secrets()
    if args.json:
        print_json({"data": [secret_out(s) for s in stored]})
        return
    rows = [
        [s.name, s.hint, s.key_id, s.updated_at.isoformat() if s.updated_at else "-"]
        for s in stored
    ]
    print_table(["PROVIDER", "HINT", "MASTER KEY", "UPDATED"], rows)
