"""The one place that composes auth, routing and dispatch.

A surface hands the engine a parsed request; the engine authenticates it,
resolves the model to targets and tries them in order until one answers
without an error that another target could fix. Retrying stops once the first
byte has gone to the client (the surface relays from then on).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .accounting import Accounting, OutputMeter
from .auth import KeyRing
from .codecs.registry import codec_for
from .config import Config
from .egress.fetch import MediaFetcher
from .errors import (
    ConnectionShareExceeded,
    InvalidRequest,
    QiaoError,
    UpstreamError,
    UpstreamStatusError,
)
from .exchange import Exchange
from .keysync import KeySync
from .observability.accesslog import AccessLog, RequestRecord
from .observability.redact import Redactor
from .plan import Plan, plan
from .policies.budget import BudgetGuard, SpendLedger
from .policies.gate import Gate
from .policies.limits import FailoverLimiter, Limiter, LocalLimiter
from .policies.local_spend import WriteBehindLedger
from .pricing import DEFAULT_USD_CNY
from .providers.cloud import StoredKeyAuth, authenticator_for, bedrock_stream
from .providers.mock import MockTransport
from .providers.openai import ProviderInfo
from .providers.reasoning import ReasoningMemory
from .router import Route, Router, Upstream
from .secrets import MasterKey, SecretError, Vault
from .storage import StorageUnavailable, Store, open_store
from .storage.sweeper import MARGIN, PendingSweeper
from .storage.writer import UsageWriter
from .upstream import Deadline, HttpTransport, Transport, UpstreamResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .policies.redis_spend import RedisSpendLedger

__all__ = ["Engine", "Opened"]

log = logging.getLogger("qiao.engine")


_MAX_ERROR_BODY = 64 * 1024


@dataclass(slots=True)
class Opened:
    """An upstream that answered with a success status; the surface relays it."""

    route: Route
    response: UpstreamResponse
    plan: Plan
    deadline: Deadline  # the relay to the client runs under it too
    meter: OutputMeter | None = None  # a stream's: what it relayed, should the upstream not say


class Health:
    """Recent failures per provider, for /readyz: an error class anyone may see, and the
    (already scrubbed) message for admins only — an upstream's error text is not public."""

    def __init__(self) -> None:
        self.last_error: dict[str, tuple[float, str, str]] = {}

    def failed(self, provider: str, err: QiaoError) -> None:
        self.last_error[provider] = (time.monotonic(), error_class(err), err.message)

    def ok(self, provider: str) -> None:
        if provider in self.last_error:
            del self.last_error[provider]

    def degraded(self, within: float = 60.0, *, detail: bool = False) -> dict[str, str]:
        now = time.monotonic()
        return {
            p: (f"{cls}: {why}" if detail else cls)
            for p, (t, cls, why) in self.last_error.items()
            if now - t < within
        }


def error_class(err: QiaoError) -> str:
    """``upstream_status_429``, ``upstream_timeout``, ...: what failed, never what it said."""
    if isinstance(err, UpstreamStatusError):
        return f"upstream_status_{err.upstream_status}"
    return err.code or type(err).__name__


def _make_transport(info: ProviderInfo) -> Transport:
    if info.config.type == "mock":
        return MockTransport(info.config.mock)
    return HttpTransport(
        info.name,
        max_connections=info.config.max_connections,
        per_key=info.config.max_connections_per_key,
        connect_timeout=info.config.timeouts.connect,
    )


class Engine:
    def __init__(self, config: Config, *, access_log: AccessLog | None = None) -> None:
        self.config = config
        self.health = Health()
        self.access_log = access_log or AccessLog(enabled=config.server.access_log)
        self._upstreams: dict[str, Upstream] = {}
        secrets: list[str] = [k.key.get_secret_value() for k in config.keys]
        if config.admin_key:
            secrets.append(config.admin_key.get_secret_value())
        for name, pc in config.providers.items():
            info = ProviderInfo.build(name, pc)
            memory = ReasoningMemory() if info.preset and info.preset.reasoning_passback else None
            auth = authenticator_for(name, pc)
            self._upstreams[name] = Upstream(info, _make_transport(info), memory, auth)
            for secret in (pc.aws_secret_access_key, pc.aws_session_token, pc.credentials_json):
                if secret is not None:
                    secrets.append(secret.get_secret_value())
            if pc.api_key:
                secrets.append(pc.api_key.get_secret_value())
        self.redact = Redactor(secrets)
        self.fetcher = MediaFetcher(config.server.media_fetch_allow)
        self.router = Router(config, self._upstreams)
        self.store: Store = open_store(config.storage.url)
        self.keys = KeyRing(config, stale_after=config.storage.stale_after)
        self.keysync = KeySync(self.store, self.keys, interval=config.storage.sync_interval)
        master = MasterKey.from_environ(os.environ)
        self.vault = Vault(master) if master is not None else None
        self._journal_tmp: str | None = None
        journal = config.storage.journal_dir
        if config.storage.url.startswith("memory:"):
            journal = self._journal_tmp = tempfile.mkdtemp(prefix="qiao-journal-")
        self.writer = UsageWriter(self.store, journal)
        prices = config.pricing.table()  # and what unpriced models cost
        self.accounting = Accounting(self.writer, prices)
        longest = max((p.timeouts.total for p in config.providers.values()), default=0.0)
        self.sweeper = PendingSweeper(self.store, older_than=longest + MARGIN)
        self.redis: Redis | None = None
        self._redis_ledger: RedisSpendLedger | None = None
        self._write_behind: WriteBehindLedger | None = None
        ledger: SpendLedger = self.store
        single_process = os.environ.get("QIAO_WORKER_INDEX") is None
        if single_process and not config.storage.url.startswith(("postgres", "postgresql")):
            # One process owns this store's spend: keep it in memory, write it behind.
            ledger = self._write_behind = WriteBehindLedger(self.store)
        limiter: Limiter = LocalLimiter()
        if config.storage.redis_url:
            from redis.asyncio import BlockingConnectionPool, Redis  # only when configured

            from .policies.redis_limits import RedisLimiter
            from .policies.redis_spend import RedisSpendLedger

            self.redis = Redis(
                connection_pool=BlockingConnectionPool.from_url(
                    config.storage.redis_url,
                    max_connections=256,
                    timeout=config.storage.redis_timeout,
                )
            )
            wait = config.storage.redis_timeout
            # Its own small pool, so other Redis users cannot starve it, and the URL for its
            # health probe (a slow reply under load is not an outage).
            remote = RedisLimiter.from_url(config.storage.redis_url, timeout=wait)
            limiter = FailoverLimiter(remote, LocalLimiter())
            ledger = self._redis_ledger = RedisSpendLedger(
                self.redis, timeout=wait, probe_url=config.storage.redis_url
            )
        self.gate = Gate(limiter, BudgetGuard(ledger), prices, DEFAULT_USD_CNY)

    async def start(self) -> None:
        """Open the store (migrating it), load the keys, start the writers. A database that is
        down at start-up does not stop the gateway: config keys work, store keys get 503."""
        try:
            await self.store.migrate()
            await self.keysync.load()
        except StorageUnavailable as exc:
            log.warning("storage unavailable at start-up (%s); retrying in the background", exc)
            self.keys.store_backed = True
            self.keys.mark_synced(False)
        await self.refresh_provider_keys()
        self.keysync.start(on_tick=self.refresh_provider_keys)
        await self.writer.start()
        self.accounting.start()
        self.sweeper.start()

    async def refresh_provider_keys(self) -> None:
        """Decrypt the stored keys of providers configured with ``api_key_from: store``."""
        stored = [u.auth for u in self._upstreams.values() if isinstance(u.auth, StoredKeyAuth)]
        if not stored:
            return
        if self.vault is None:
            log.warning("providers want stored keys but no master key is loaded (QIAO_MASTER_KEY)")
            return
        try:
            secrets = {s.name: s for s in await self.store.list_secrets()}
        except StorageUnavailable:
            return  # keep the keys we have
        for auth in stored:
            secret = secrets.get(auth.name)
            try:
                auth.key = self.vault.open(secret) if secret is not None else None
            except SecretError as exc:
                log.error("cannot decrypt the stored key of provider %r: %s", auth.name, exc)
            if auth.key:
                self.redact.add(auth.key)

    async def has_store_admin(self) -> bool:
        try:
            return any(
                k.role == "admin" and k.revoked_at is None for k in await self.store.list_keys()
            )
        except StorageUnavailable:
            return True  # cannot tell: do not offer a bootstrap token

    def attempt_failed(self, rec: RequestRecord, attempt_id: str, status: int | None) -> None:
        self.accounting.settle(rec, attempt_id, "error", status)

    def finish(self, rec: RequestRecord) -> None:
        """Settle the relayed attempt once the answer is done (or the client went away)."""
        if rec.attempt_id is None:
            return
        status = "ok" if 200 <= rec.status < 300 and not rec.error else "error"
        if rec.status == 499 or rec.error == "client_closed":
            status = "interrupted"
        self.accounting.settle(rec, rec.attempt_id, status, rec.status)  # type: ignore[arg-type]
        rec.attempt_id = None

    @property
    def upstreams(self) -> Mapping[str, Upstream]:
        return self._upstreams

    async def close(self) -> None:
        self.access_log.flush()
        await self.gate.close()
        if self._write_behind is not None:
            await self._write_behind.close()
        closer = getattr(self.gate.limiter, "close", None)
        if closer is not None:
            await closer()
        if self._redis_ledger is not None:
            self._redis_ledger.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.keysync.stop()
        await self.sweeper.close()
        await self.accounting.close()
        await self.writer.close(timeout=10.0)
        await self.store.close()
        if self._journal_tmp:
            shutil.rmtree(self._journal_tmp, ignore_errors=True)
        await self.fetcher.close()
        for up in self._upstreams.values():
            await up.transport.close()
            if up.auth is not None:
                await up.auth.close()

    async def open(
        self, ex: Exchange, rec: RequestRecord, routes: Sequence[Route] | None = None
    ) -> Opened:
        """Send to the first target that answers; raise the last error if none does.
        ``routes``: ``ex.model`` already resolved by the caller."""
        if routes is None:
            routes = self.router.resolve(ex.model)
        last: QiaoError | None = None
        inlined = False
        for n, route in enumerate(routes, 1):
            if route.protocol == "gemini" and ex.protocol != "gemini" and not inlined:
                if ex.kind in ("chat", "responses"):  # Gemini takes media as bytes: fetch URLs
                    await self.fetcher.inline(ex.canonical())
                inlined = True
            rec.provider = route.upstream.name
            rec.upstream_model = route.model
            try:
                the_plan = plan(ex, route)
            except InvalidRequest as err:  # this target cannot express the request
                if n == len(routes):
                    raise
                last = err
                continue
            rec.attempts += 1
            attempt_id = self.accounting.pending(rec, rec.attempts)
            try:
                opened = await self._attempt(the_plan, route, rec)
            except UpstreamError as err:
                self.attempt_failed(rec, attempt_id, err.status)
                err.provider = err.provider or route.upstream.name
                if not isinstance(err, ConnectionShareExceeded):  # the caller's doing
                    self.health.failed(route.upstream.name, err)
                last = err
                if not err.retryable:
                    raise
                continue
            except BaseException:  # cancelled (client gone) or a bug: the row still settles
                self.attempt_failed(rec, attempt_id, 499)
                raise
            rec.attempt_id = attempt_id
            if ex.stream:
                opened.meter = self.accounting.track(rec, attempt_id)
            return opened
        assert last is not None
        raise last

    async def _attempt(self, the_plan: Plan, route: Route, rec: RequestRecord) -> Opened:
        request = the_plan.request
        request.owner = rec.key_id  # whose share of the provider's pool the call takes
        deadline = Deadline(request.timeouts)
        t0 = time.perf_counter()
        try:
            if route.upstream.auth is not None:
                await route.upstream.auth.apply(request)
            response = await route.upstream.transport.send(request, deadline)
            if response.status >= 400:
                raise await self._status_error(response, route.upstream.name, the_plan)
            if request.stream and route.upstream.info.config.type == "bedrock":
                response = bedrock_stream(response)
        finally:
            rec.upstream_s += time.perf_counter() - t0
        self.health.ok(route.upstream.name)
        return Opened(route, response, the_plan, deadline)

    async def _status_error(
        self, response: UpstreamResponse, provider: str, the_plan: Plan
    ) -> UpstreamStatusError:
        try:
            body = await response.read()
        except UpstreamError:
            body = b""
        finally:
            response.close()
        text = self.redact.body(body[:_MAX_ERROR_BODY]).decode("utf-8", "replace")
        retry_after = _retry_after(response.headers.get("retry-after"))
        codec = codec_for(the_plan.upstream_protocol)
        message = codec.error_message(response.status, text.encode()) or (
            f"upstream returned HTTP {response.status}"
        )
        err = UpstreamStatusError(
            message,
            upstream_status=response.status,
            body=text.encode(),
            content_type=response.headers.get("content-type", "application/json"),
            provider=provider,
            retry_after=retry_after,
        )
        err.protocol = the_plan.upstream_protocol
        return err


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    return body
