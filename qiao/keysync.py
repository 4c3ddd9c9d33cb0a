"""Keeping the in-memory key ring in step with the store, on every node.

A full load at start-up, then a poll of the store's change counter (every ``interval``
seconds, 1 s by default) applies revocations, rotations and limit changes made on any node:
they take effect fleet-wide within about a second, with or without Redis. A failed poll marks
the store down (known keys keep working for a while; unknown keys get 503), and the next
successful one recovers on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .auth import KeyRing, Principal, principal_for
from .storage.base import StorageUnavailable, Store
from .storage.models import Team, VirtualKey

__all__ = ["KeySync"]

log = logging.getLogger("qiao.keysync")


class KeySync:
    def __init__(self, store: Store, ring: KeyRing, *, interval: float = 1.0) -> None:
        self._store = store
        self._ring = ring
        self._interval = interval
        self._version = -1
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Load every key now; raises StorageUnavailable if the store cannot be reached."""
        version, _ = await self._store.changes_since(2**62)
        teams = {t.id: t for t in await self._store.list_teams()}
        principals = [
            principal_for(k, teams.get(k.team_id or ""))
            for k in await self._store.list_keys()
            if k.revoked_at is None
        ]
        self._ring.replace_store_keys(principals)
        self._version = version
        self._ring.mark_synced(True)

    async def poll_once(self) -> None:
        try:
            if self._version < 0:
                await self.load()
                return
            version, changed = await self._store.changes_since(self._version)
            if changed:
                await self._apply(changed)
            self._version = version
            self._ring.mark_synced(True)
        except StorageUnavailable as exc:
            if not self._ring.store_down:
                log.warning("key store unavailable: %s", exc)
            self._ring.mark_synced(False)

    async def _apply(self, changed: list[str]) -> None:
        teams: dict[str, Team | None] = {}
        for ident in changed:
            team = await self._store.get_team(ident)
            if team is not None or ident.startswith("team"):
                # A team changed: every key of the team carries its limits and budget.
                teams[ident] = team
                for member in await self._store.list_keys(team_id=ident):
                    self._upsert_key(member.id, member, team)
                continue
            key = await self._store.get_key(ident)
            team_id = key.team_id if key else None
            if team_id and team_id not in teams:
                teams[team_id] = await self._store.get_team(team_id)
            self._upsert_key(ident, key, teams.get(team_id) if team_id else None)

    def _upsert_key(self, key_id: str, key: VirtualKey | None, team: Team | None) -> None:
        old = [p.digest for p in self._ring.principals() if p.key_id == key_id]
        principal: Principal | None = None
        if isinstance(key, VirtualKey) and key.revoked_at is None:
            principal = principal_for(key, team)
        self._ring.upsert(principal, old)

    async def _run(self, on_tick: Callable[[], Awaitable[None]] | None) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self._interval)
            await self.poll_once()
            ticks += 1
            if on_tick is not None and ticks >= 5:  # provider keys: every 5 polls (~5 s)
                ticks = 0
                try:
                    await on_tick()
                except Exception as exc:  # never let a refresh kill the sync loop
                    log.warning("periodic refresh failed: %s", type(exc).__name__)

    def start(self, on_tick: Callable[[], Awaitable[None]] | None = None) -> None:
        self._task = asyncio.create_task(self._run(on_tick), name="qiao-keysync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
