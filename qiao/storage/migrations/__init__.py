"""Alembic migrations of the SQL schema; run them with ``SqlStore.migrate()`` (no alembic.ini)."""
