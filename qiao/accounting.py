"""Usage accounting: one row per upstream attempt, written before it is forwarded and settled
after — through the :class:`~qiao.storage.writer.UsageWriter`, so a crash, a client that goes
away or a database outage loses no row. Costs are computed in Decimal from the price table.

A stream cut off before its upstream reported usage (the client left, the upstream broke off,
the process was killed) is charged the output it relayed, estimated by an :class:`OutputMeter`,
not nothing. While a stream runs, its estimate is recorded every ``progress_every`` seconds as
a pending row, so that after a ``kill -9`` the recovered (``interrupted``) row has it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .canonical import ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .observability.accesslog import RequestRecord
from .pricing import Money, PriceTable
from .storage.models import UsageRecord, UsageStatus
from .storage.writer import UsageWriter

__all__ = ["PROGRESS_EVERY", "Accounting", "OutputMeter", "usage_of"]

log = logging.getLogger("qiao.accounting")
_ZERO = Decimal(0)
PROGRESS_EVERY = 5.0  # seconds between the progress rows of one stream


def usage_of(rec: RequestRecord) -> Usage:
    u: dict[str, Any] | None = rec.usage
    if not u:
        return Usage()
    return Usage(
        _count(u.get("input_tokens")),
        _count(u.get("output_tokens")),
        _count(u.get("cache_read_tokens")),
        _count(u.get("cache_write_tokens")),
        _count(u.get("reasoning_tokens")),
    )


def _count(value: Any) -> int:
    return value if type(value) is int else int(value or 0)


class OutputMeter:
    """What one stream relayed to its client, as an output-token estimate for when the
    upstream never said: about four ASCII characters, or one other character, a token (the
    rule of :mod:`qiao.surfaces.tokens`). Translated and observed streams feed it the text of
    their events; an OpenAI passthrough gives its count of chunks instead (its upstreams send
    about a token a chunk, and reading every chunk's text would cost the hot path)."""

    __slots__ = ("ascii", "chunks", "other")

    def __init__(self) -> None:
        self.ascii = self.other = self.chunks = 0

    def text(self, text: str) -> None:
        if text.isascii():  # O(1) for str
            self.ascii += len(text)
        else:
            ascii_chars = len(text.encode("ascii", "ignore"))
            self.ascii += ascii_chars
            self.other += len(text) - ascii_chars

    def event(self, ev: object) -> None:
        """Count the text of a canonical stream event."""
        if isinstance(ev, TextDelta | ReasoningDelta):
            self.text(ev.text)
        elif isinstance(ev, ToolCallDelta):
            self.text(ev.arguments)

    @property
    def tokens(self) -> int:
        return max(self.chunks, (self.ascii + 3) // 4 + self.other)


@dataclass(slots=True, eq=False)
class _Stream:
    rec: RequestRecord
    meter: OutputMeter
    recorded: int = 0  # output tokens in the last row written


class Accounting:
    def __init__(
        self, writer: UsageWriter, prices: PriceTable, *, progress_every: float = PROGRESS_EVERY
    ) -> None:
        self._writer = writer
        self.prices = prices
        self._progress_every = progress_every
        self._streams: dict[str, _Stream] = {}  # attempt id -> a stream being relayed
        self._task: asyncio.Task[None] | None = None

    def cost(self, model: str | None, usage: Usage) -> Money | None:
        """The cost of ``usage`` (None: the model has no price)."""
        if not model or self.prices.get(model) is None:
            return None
        return self.prices.cost(model, usage)

    def pending(self, rec: RequestRecord, attempt: int) -> str:
        attempt_id = f"{rec.request_id}.{attempt}"
        rec.attempt_started_at = datetime.now(UTC)
        self._writer.record(self._row(rec, attempt_id, "pending", Usage(), None))
        return attempt_id

    def track(self, rec: RequestRecord, attempt_id: str) -> OutputMeter:
        """A meter for the stream of ``attempt_id``, about to be relayed; counted until the
        attempt settles."""
        meter = OutputMeter()
        self._streams[attempt_id] = _Stream(rec, meter)
        return meter

    def settle(
        self, rec: RequestRecord, attempt_id: str, status: UsageStatus, http_status: int | None
    ) -> None:
        stream = self._streams.pop(attempt_id, None)
        usage = usage_of(rec) if stream is None else _relayed(stream)
        money = self.cost(rec.upstream_model or rec.model, usage)
        rec.charged = (usage, money)  # the gate settles budgets with the same figures
        self._writer.record(
            self._row(
                rec,
                attempt_id,
                status,
                usage,
                money,
                finished_at=datetime.now(UTC),
                http_status=http_status,
            )
        )

    def record_progress(self) -> None:
        """A pending row for each stream that relayed more since its last one."""
        for attempt_id, stream in self._streams.items():
            usage = _relayed(stream)
            if usage.output_tokens <= stream.recorded:
                continue
            stream.recorded = usage.output_tokens
            money = self.cost(stream.rec.upstream_model or stream.rec.model, usage)
            self._writer.record(self._row(stream.rec, attempt_id, "pending", usage, money))

    def _row(
        self,
        rec: RequestRecord,
        attempt_id: str,
        status: UsageStatus,
        usage: Usage,
        money: Money | None,
        *,
        finished_at: datetime | None = None,
        http_status: int | None = None,
    ) -> UsageRecord:
        return UsageRecord(
            attempt_id=attempt_id,
            request_id=rec.request_id,
            key_id=rec.key_id,
            team_id=rec.team_id,
            model=rec.model or "",
            provider=rec.provider,
            status=status,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=_ZERO if money is None else money.amount,
            currency="USD" if money is None else money.currency,
            started_at=rec.attempt_started_at,
            finished_at=finished_at,
            http_status=http_status,
        )

    # --- life cycle: the progress rows

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qiao-usage-progress")

    async def close(self) -> None:
        """Stop; the streams still open get a last row (the journal keeps it for the next
        start if they never settle)."""
        self.record_progress()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._progress_every)
            try:
                self.record_progress()
            except Exception:  # a bug: say so, keep counting
                log.exception("usage progress")


def _relayed(stream: _Stream) -> Usage:
    """The stream's usage as the upstream reported it, with the relayed estimate for output
    the upstream has not reported (yet, or ever)."""
    u = usage_of(stream.rec)
    if u.output_tokens:
        return u
    return Usage(
        u.input_tokens,
        stream.meter.tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    )
