"""The admin commands' forms: options declared, read into the admin API's input fields, and
records printed for people (aligned text) or machines (``--json``, the API's shapes).

Options map onto :mod:`qiao.admin.schemas` fields, so the command line and the API validate
alike; a validation error is worded with the option it came from (``--cidr: …``). On update,
``--rpm``/``--tpm``/``--concurrency`` and the budget options merge into what the record has,
so ``--rpm 5`` keeps the tpm already set; lists and ``--metadata`` replace.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from .storage.models import Budget, Limits, VirtualKey

__all__ = [
    "CliError",
    "budget_text",
    "describe",
    "key_fields",
    "key_options",
    "print_json",
    "print_table",
    "show",
    "team_fields",
    "team_options",
]

# Where a validation error points, in the words of the command line.
_FLAGS = {
    "name": "--name",
    "team_id": "--team",
    "models": "--models",
    "cidrs": "--cidr",
    "expires_at": "--expires",
    "metadata": "--metadata",
    "role": "--role",
    "limits.rpm": "--rpm",
    "limits.tpm": "--tpm",
    "limits.concurrency": "--concurrency",
    "budget.amount": "--budget",
    "budget.currency": "--currency",
    "budget.period": "--period",
    "api_key": "the provider key",
}
_DURATION = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class CliError(Exception):
    """A mistake on the command line; the message is printed as is."""


# ---------------------------------------------------------------------- options


def _spend_options(p: argparse.ArgumentParser, *, for_update: bool) -> None:
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--concurrency", type=int, help="requests in flight")
    p.add_argument("--budget", metavar="AMOUNT", help="spend limit per period")
    p.add_argument("--currency", choices=("USD", "CNY", "tokens"))
    p.add_argument("--period", choices=("day", "week", "month", "total"))
    p.add_argument("--soft", dest="hard", action="store_const", const=False, help="alert only")
    p.add_argument("--hard", dest="hard", action="store_const", const=True, help="refuse past it")
    p.add_argument("--metadata", nargs="+", action="extend", metavar="K=V", help="replaces all")
    if for_update:
        p.add_argument("--no-limits", action="store_true", help="remove rpm/tpm/concurrency")
        p.add_argument("--no-budget", action="store_true", help="remove the budget")


def key_options(p: argparse.ArgumentParser, *, for_update: bool = False) -> None:
    p.add_argument("--name", required=not for_update)
    p.add_argument("--team", help="team id or name")
    p.add_argument("--models", action="append", help="comma-separated patterns, e.g. 'gpt-*'")
    p.add_argument("--cidr", nargs="+", action="extend", help="allowed source networks")
    p.add_argument("--expires", help="ISO-8601 time (UTC if no offset) or 30d / 12h / 90m")
    p.add_argument("--role", choices=("user", "admin", "viewer"))
    _spend_options(p, for_update=for_update)
    if for_update:
        p.add_argument("--no-team", action="store_true", help="take the key out of its team")
        p.add_argument("--no-cidrs", action="store_true", help="allow any source address")
        p.add_argument("--no-expiry", action="store_true", help="never expire")


def team_options(p: argparse.ArgumentParser, *, for_update: bool = False) -> None:
    p.add_argument("--name", required=not for_update)
    _spend_options(p, for_update=for_update)


# ---------------------------------------------------------------------- options → fields


def key_fields(args: argparse.Namespace, current: VirtualKey | None) -> dict[str, Any]:
    """:class:`~qiao.admin.schemas.KeyIn`/``KeyPatch`` fields from the options given. The
    caller resolves ``--team`` (a name needs the store)."""
    out: dict[str, Any] = {}
    if args.name is not None:
        out["name"] = args.name
    if getattr(args, "no_team", False):
        out["team_id"] = None
    if args.models:
        out["models"] = [m.strip() for spec in args.models for m in spec.split(",") if m.strip()]
    if args.cidr:
        out["cidrs"] = args.cidr
    elif getattr(args, "no_cidrs", False):
        out["cidrs"] = []
    if args.expires is not None:
        out["expires_at"] = _expiry(args.expires)
    elif getattr(args, "no_expiry", False):
        out["expires_at"] = None
    if args.role is not None:
        out["role"] = args.role
    limits, budget = (current.limits, current.budget) if current else (Limits(), None)
    return out | _spend_fields(args, limits, budget)


def team_fields(args: argparse.Namespace, limits: Limits, budget: Budget | None) -> dict[str, Any]:
    """:class:`~qiao.admin.schemas.TeamIn`/``TeamPatch`` fields from the options given."""
    out = _spend_fields(args, limits, budget)
    if args.name is not None:
        out["name"] = args.name
    return out


def _spend_fields(
    args: argparse.Namespace, limits: Limits, budget: Budget | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rates = {k: getattr(args, k) for k in ("rpm", "tpm", "concurrency")}
    if getattr(args, "no_limits", False):
        out["limits"] = None
    elif any(v is not None for v in rates.values()):
        now = {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency}
        out["limits"] = now | {k: v for k, v in rates.items() if v is not None}
    spend = {k: getattr(args, k) for k in ("currency", "period", "hard")}
    spend["amount"] = args.budget
    if getattr(args, "no_budget", False):
        out["budget"] = None
    elif any(v is not None for v in spend.values()):
        merged = _budget_fields(budget) | {k: v for k, v in spend.items() if v is not None}
        if "amount" not in merged:
            raise CliError("--currency, --period, --soft and --hard need --budget AMOUNT")
        out["budget"] = merged
    if args.metadata is not None:
        out["metadata"] = dict(_pair(p) for p in args.metadata)
    return out


def _budget_fields(budget: Budget | None) -> dict[str, Any]:
    if budget is None:
        return {}
    return {
        "amount": str(budget.amount),
        "currency": budget.currency,
        "period": budget.period,
        "hard": budget.hard,
    }


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CliError(f"--metadata: {text!r} is not KEY=VALUE")
    return key, value


def _expiry(text: str) -> str:
    m = _DURATION.fullmatch(text)
    if m:
        at = datetime.now(UTC) + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return at.isoformat()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--expires: {text!r} is neither an ISO-8601 time (2027-01-01T00:00:00Z) "
            "nor a duration (30d, 12h, 90m)"
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def describe(exc: ValidationError) -> str:
    """The first validation error, named by its option: ``--cidr: 'x' is not a network``."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first["loc"]]
    where = _FLAGS.get(".".join(loc[:2])) or _FLAGS.get(loc[0] if loc else "")
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where or '.'.join(loc)}: {message}"


# ---------------------------------------------------------------------- output


def print_json(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _text(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        if any(isinstance(v, dict) for v in value.values()):
            return orjson.dumps(value).decode()
        return " ".join(f"{k}={v}" for k, v in value.items() if v is not None) or "-"
    return str(value)


def budget_text(status: Mapping[str, Any] | None) -> str:
    """A ``budget_status`` in one line: ``spent 16 tokens, remaining 24 tokens; day from …``."""
    if status is None:
        return "unknown: the spend ledger cannot be read just now"
    unit = status["currency"]
    used = f"spent {status['spent']} {unit}, remaining {status['remaining']} {unit}"
    if status["period_end"] is None:
        return f"{used}; {status['period']} (never resets)"
    return f"{used}; {status['period']} from {status['period_start']} to {status['period_end']}"


def show(args: argparse.Namespace, record: Mapping[str, Any]) -> None:
    """One record: the API's JSON with ``--json``, else aligned ``field  value`` lines."""
    if args.json:
        print_json(record)
        return
    width = max(len(k) for k in record)
    for k, v in record.items():
        text = budget_text(v) if k == "budget_status" else _text(v)
        print(f"{k:<{width}}  {text}")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
