"""The SQL statements of the hot paths, built once per dialect with bound parameters.

Building a Core statement costs more than running it on SQLite (about 0.1 ms each), so the
statements used per request are built here once; the rare admin writes build theirs as needed.
Parameter names start with ``p_``: Core reserves column names for INSERT/UPDATE values.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, Table, bindparam, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from . import codec
from .schema import Money, UtcDateTime, change_version, changes, spend, usage, virtual_keys

__all__ = ["Statements"]


class Statements:
    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        period = (
            spend.c.scope == bindparam("p_scope"),
            spend.c.period_start == bindparam("p_start"),
        )
        added = spend.c.amount + bindparam("p_delta", type_=Money())
        # Reserve: the database re-checks this WHERE under the row lock, so it alone decides.
        self.reserve = (
            update(spend)
            .where(*period, added <= bindparam("p_limit", type_=Money()))
            .values(amount=added)
        )
        self.open_period = self._insert(spend).on_conflict_do_nothing()
        add = self._insert(spend)
        self.add_spend = add.on_conflict_do_update(
            index_elements=["scope", "period_start"],
            set_={"amount": spend.c.amount + add.excluded.amount},
        )
        self.get_spend = select(spend.c.amount).where(*period)
        self.key_by_hash = select(virtual_keys).where(
            virtual_keys.c.key_hash == bindparam("p_hash")
        )
        self.bump_version = update(change_version).values(version=change_version.c.version + 1)
        self.version = select(change_version.c.version)
        self.record_change = self.upsert(changes, ("kind", "entity_id"))
        new = self._insert(usage)
        # A settled row never goes back to pending (codec.settles, in SQL).
        pending: ColumnElement[str] = literal_column(
            "'pending'"
        )  # a constant: no parameter in the driver SQL
        self.write_usage = new.on_conflict_do_update(
            index_elements=["attempt_id"],
            set_={c.name: new.excluded[c.name] for c in usage.c if c.name != "attempt_id"},
            where=or_(usage.c.status == pending, new.excluded.status != pending),
        )
        # The same upsert as driver SQL, for SQLite's executemany on rows already in stored
        # form (codec.sqlite_usage_row): Core's per-row type processing costs twice the insert.
        compiled = self.write_usage.compile(dialect=sqlite.dialect())
        if compiled.positiontup != list(codec.USAGE_COLUMNS):
            raise RuntimeError("codec.USAGE_COLUMNS is out of step with the usage table")
        self.write_usage_sqlite = str(compiled)
        self.interrupt_stale = self._interrupt_stale(pending)

    def _interrupt_stale(self, pending: ColumnElement[str]) -> Executable:
        """Mark a bounded batch of attempts pending since before ``p_before`` interrupted.
        The literal ``'pending'`` lets the planner use the partial index ``ix_usage_pending``;
        the outer re-check keeps a row that settled meanwhile settled; on PostgreSQL nodes
        sweeping at once skip each other's rows instead of waiting on them."""
        stale = (
            select(usage.c.attempt_id)
            .where(usage.c.status == pending, usage.c.started_at < bindparam("p_before"))
            .order_by(usage.c.started_at)
            .limit(bindparam("p_limit", type_=Integer()))
        )
        if self.pg:  # a materialized CTE runs once; a subquery may be rescanned past its LIMIT
            cte = stale.with_for_update(skip_locked=True).cte("stale").prefix_with("MATERIALIZED")
            batch = select(cte.c.attempt_id).scalar_subquery()
        else:  # SQLite builds the IN list once (and reports no row count after a WITH)
            batch = stale.scalar_subquery()
        return (
            update(usage)
            .where(usage.c.attempt_id.in_(batch), usage.c.status == pending)
            .values(status="interrupted", finished_at=bindparam("p_now", type_=UtcDateTime()))
        )

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self.pg else sqlite.insert(table)

    def upsert(self, table: Table, keys: Sequence[str], keep: Sequence[str] = ()) -> Executable:
        """INSERT a row, or on a ``keys`` conflict update every column but ``keys`` and ``keep``;
        execute it with the row as parameters."""
        stmt = self._insert(table)
        skip = set(keys) | set(keep)
        changed = {c.name: stmt.excluded[c.name] for c in table.c if c.name not in skip}
        return stmt.on_conflict_do_update(index_elements=list(keys), set_=changed)
