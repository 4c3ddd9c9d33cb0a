"""Where Qiao keeps keys, teams, provider secrets, usage, spend and the audit log.

One interface (:class:`Store`), three backends chosen by URL with :func:`open_store`:
SQLite (the default, ``sqlite:///./qiao.db``), PostgreSQL and memory (tests, ``--demo``).
"""

from __future__ import annotations

from typing import Any

from .base import StorageUnavailable, Store
from .memory import MemoryStore
from .sql import SqlStore

__all__ = ["DEFAULT_URL", "MemoryStore", "SqlStore", "StorageUnavailable", "Store", "open_store"]

DEFAULT_URL = "sqlite:///./qiao.db"


def open_store(url: str, **kw: Any) -> Store:
    """The backend for ``url``: ``memory://``; ``sqlite:///path`` or a plain file path;
    ``postgresql://…`` or ``postgres://…``. ``kw`` goes to the backend's constructor
    (``read_timeout``, ``write_timeout``, ``pool_size``, ``clock``). Call ``migrate()`` next."""
    if url.startswith("memory://"):
        return MemoryStore(**kw)
    if "://" not in url:
        url = "sqlite:///" + url
    return SqlStore(url, **kw)
