"""Alembic environment. ``SqlStore.migrate()`` hands us an open connection in
``config.attributes["connection"]``; the alembic command line (for writing new revisions) may
instead pass ``-x url=sqlite:///dev.db`` or set ``QIAO_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from qiao.storage.schema import metadata
from qiao.storage.sql import engine_url

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER needs table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "QIAO_DATABASE_URL"
    )
    if not url:
        raise RuntimeError("no database: pass -x url=... or set QIAO_DATABASE_URL")
    return url


def _run_with_own_engine() -> None:
    url = engine_url(_url())
    if not url.get_dialect().is_async:
        with create_engine(url).begin() as conn:
            _configure(conn)
        return

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_configure)
        finally:
            await engine.dispose()

    asyncio.run(run())


def main() -> None:
    connection = config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(url=engine_url(_url()), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    elif connection is not None:
        _configure(connection)
    else:
        _run_with_own_engine()


main()
