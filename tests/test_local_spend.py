"""The write-behind spend ledger: exact in one process, persisted to the store, survives a
store outage and a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from qiao.policies.local_spend import WriteBehindLedger
from qiao.storage import open_store
from qiao.storage.base import StorageUnavailable

START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_budget_race_is_exact_and_persisted(url: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store("memory://" if url == "memory://" else f"sqlite:///{tmp_path / 's.db'}")
        await store.migrate()
        ledger = WriteBehindLedger(store, flush_interval=0.01)
        results = await asyncio.gather(
            *(
                ledger.reserve_spend("key:k", START, Decimal("0.10"), Decimal("1.00"))
                for _ in range(50)
            )
        )
        assert results.count(True) == 10
        await ledger.adjust_spend("key:k", START, Decimal("-0.05"))  # a settle refunds
        await ledger.close()
        assert await store.get_spend("key:k", START) == Decimal("0.95")
        again = WriteBehindLedger(store)  # a restart reads what was saved
        assert await again.reserve_spend("key:k", START, Decimal("0.10"), Decimal("1.00")) is False
        assert await again.reserve_spend("key:k", START, Decimal("0.05"), Decimal("1.00")) is True
        await again.close()
        await store.close()

    asyncio.run(main())


class _FlakyStore:
    def __init__(self) -> None:
        self.down = True
        self.saved = Decimal(0)

    async def reserve_spend(self, *a: object) -> bool:  # pragma: no cover - not used
        raise AssertionError

    async def adjust_spend(self, scope: str, start: datetime, delta: Decimal) -> None:
        if self.down:
            raise StorageUnavailable("down")
        self.saved += delta

    async def get_spend(self, scope: str, start: datetime) -> Decimal:
        return self.saved


def test_deltas_wait_for_the_store_to_return() -> None:
    async def main() -> None:
        store = _FlakyStore()
        ledger = WriteBehindLedger(store, flush_interval=0.01)
        assert await ledger.reserve_spend("s", START, Decimal("3"), Decimal("10"))
        await asyncio.sleep(0.05)
        assert store.saved == 0  # the store is down: kept in memory
        store.down = False
        await ledger.close()
        assert store.saved == Decimal("3")

    asyncio.run(main())
