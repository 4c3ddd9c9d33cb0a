"""Configuration: one YAML file, ``${ENV}`` interpolation, strict validation.

The result is a frozen :class:`Config` built once and passed down. Errors name
the file, the line and the key. Unknown keys are rejected. Without a file,
:func:`from_env` configures providers from the usual environment variables.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .pricing import Fiat, Price, PriceTable
from .providers.presets import PRESETS, WireProtocol
from .storage.models import Budget, Currency, Limits, Period

__all__ = [
    "Config",
    "ConfigError",
    "KeyConfig",
    "MockSettings",
    "PricingSettings",
    "ProviderConfig",
    "ServerSettings",
    "StorageSettings",
    "Target",
    "Timeouts",
    "from_env",
    "load",
    "loads",
]

MIN_KEY_LENGTH = 8
ADMIN_KEY_ADVISED = 32  # below this, start-up warns (see Config.admin_key_warning)
PROVIDER_TYPES = frozenset({*PRESETS, "azure", "mock", "vertex", "bedrock"})


class ConfigError(Exception):
    """The configuration is invalid; the message names file, line and key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Frozen):
    """Seconds. ``first_byte`` covers the whole answer of a non-streaming call; ``idle`` is
    the longest wait for the upstream's next chunk; ``total`` bounds the whole call, relaying
    to the client included; ``write_stall`` is the longest a write to a client that does not
    read may wait (then the stream is cut and its upstream connection freed)."""

    connect: float = Field(10.0, gt=0)
    first_byte: float = Field(300.0, gt=0)
    idle: float = Field(120.0, gt=0)
    total: float = Field(900.0, gt=0)
    write_stall: float = Field(30.0, gt=0)


class MockSettings(_Frozen):
    latency_ms: float = Field(0.0, ge=0)
    tokens_per_second: float = Field(0.0, ge=0, description="0 = as fast as possible")
    reply: str | None = None
    embedding_dimensions: int = Field(16, ge=1, le=8192)


class ProviderConfig(_Frozen):
    type: str
    protocol: WireProtocol | None = Field(
        None, description="wire protocol; default: the type's own (e.g. deepseek → openai)"
    )
    base_url: str | None = None
    api_key: SecretStr | None = None
    # "store": the key lives encrypted in the database (admin API / `qiao providers set-key`)
    api_key_from: Literal["config", "store"] = "config"
    api_version: str | None = None
    # Vertex AI (service-account auth) and AWS Bedrock (SigV4 or a Bedrock API key)
    project: str | None = None
    region: str | None = None
    credentials_file: str | None = None
    credentials_json: SecretStr | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(256, ge=1)
    # How many of those one caller key may hold at once (default: half the pool), so one key
    # cannot starve the others; a deployment with a single key sets it to max_connections.
    max_connections_per_key: int | None = Field(None, ge=1)
    mock: MockSettings = MockSettings()
    # A client's built-in web search (Codex declares OpenAI's ``web_search``) on a translated
    # request: "auto" sends this provider's own search tool where it is known to work (see
    # qiao.plan), "native" wherever its protocol has one, "drop" never (searches cost extra).
    web_search: Literal["auto", "native", "drop"] = "auto"

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in PROVIDER_TYPES:
            raise ValueError(
                f"unknown provider type {v!r}; known: {', '.join(sorted(PROVIDER_TYPES))}"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("base_url must start with http:// or https:// and name a host")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _complete(self) -> ProviderConfig:
        if self.type == "azure":
            if not self.base_url:
                raise ValueError(
                    "an azure provider needs base_url (https://RESOURCE.openai.azure.com)"
                )
            if not self.api_version:
                raise ValueError("an azure provider needs api_version, e.g. 2024-10-21")
        if self.type in ("vertex", "bedrock"):
            self._check_cloud()
            return self
        preset = PRESETS.get(self.type)
        if self.protocol not in (None, self.native_protocol):
            if (
                self.protocol != "anthropic"
                or preset is None
                or not (preset.anthropic_base_url or self.base_url)
            ):
                raise ValueError(f"a {self.type} provider cannot speak protocol {self.protocol!r}")
        if self.api_key_from == "store":
            if self.api_key is not None:
                raise ValueError("api_key_from: store and api_key exclude each other")
            return self
        if self.type not in ("mock",) and self.api_key is None:
            preset = PRESETS.get(self.type)
            if preset is None or not preset.key_optional:
                raise ValueError(f"a {self.type} provider needs api_key")
        return self

    def _check_cloud(self) -> None:
        if not self.region:
            raise ValueError(f"a {self.type} provider needs region")
        if self.type == "vertex":
            if not self.project:
                raise ValueError("a vertex provider needs project")
            if not (self.credentials_file or self.credentials_json):
                raise ValueError("a vertex provider needs credentials_file or credentials_json")
        elif not (self.api_key or (self.aws_access_key_id and self.aws_secret_access_key)):
            raise ValueError(
                "a bedrock provider needs aws_access_key_id and aws_secret_access_key, "
                "or api_key (a Bedrock API key)"
            )

    @property
    def native_protocol(self) -> WireProtocol:
        if self.type == "bedrock":
            return "anthropic"
        if self.type == "vertex":
            return "gemini"  # Claude models on Vertex speak Anthropic's protocol (per route)
        preset = PRESETS.get(self.type)
        return preset.protocol if preset else "openai"

    @property
    def resolved_protocol(self) -> WireProtocol:
        return self.protocol or self.native_protocol

    @property
    def resolved_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        preset = PRESETS.get(self.type)
        if preset is None:
            return ""
        if self.resolved_protocol == "anthropic" and preset.protocol != "anthropic":
            return preset.anthropic_base_url or ""
        return preset.base_url


class Target(_Frozen):
    provider: str
    model: str | None = Field(None, description="upstream model name; default: the alias")


class LimitsConfig(_Frozen):
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)

    def to_limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.concurrency)


class BudgetConfig(_Frozen):
    # ≤ 9e9 so every store can hold spend exactly (nano-units in a signed 64-bit integer)
    amount: Decimal = Field(gt=0, le=Decimal("9000000000"), allow_inf_nan=False)
    currency: Currency = "USD"
    period: Period = "month"
    hard: bool = True

    def to_budget(self) -> Budget:
        return Budget(self.amount, self.currency, self.period, self.hard)


class KeyConfig(_Frozen):
    name: str = Field(min_length=1, max_length=128)
    key: SecretStr
    models: tuple[str, ...] = ("*",)
    rate_limits: LimitsConfig | None = Field(None, alias="limits")
    spend: BudgetConfig | None = Field(None, alias="budget")

    @property
    def limits(self) -> Limits:
        return self.rate_limits.to_limits() if self.rate_limits else Limits()

    @property
    def budget(self) -> Budget | None:
        return self.spend.to_budget() if self.spend else None

    @field_validator("key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"a key must be at least {MIN_KEY_LENGTH} characters")
        return v


class ServerSettings(_Frozen):
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    header_timeout: float = Field(15.0, gt=0, description="idle keep-alive and header read")
    body_timeout: float = Field(60.0, gt=0)
    access_log: bool = True
    # Browser origins allowed to call Qiao (CORS), e.g. ["https://chat.example.com"] or ["*"].
    # Empty (the default): no CORS headers, preflight requests are refused.
    cors_origins: tuple[str, ...] = ()
    # Networks from which request media (image/PDF URLs) may be fetched although they are not
    # public, e.g. ["10.20.0.0/16"] for an intranet image host. Default: public addresses only.
    media_fetch_allow: tuple[str, ...] = ()

    @field_validator("media_fetch_allow")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR)") from None
        return v


class StorageSettings(_Frozen):
    """Where keys, teams, usage and the audit log live; Redis is optional (fleet-wide limits)."""

    url: str = Field("sqlite:///qiao.db", description="sqlite:///PATH, postgresql://..., memory://")
    redis_url: str | None = None
    redis_timeout: float = Field(
        0.25,
        gt=0,
        le=10,
        description="seconds a Redis call may take; for rate limits, a later reply only starts "
        "a health probe (they fall back to this process when Redis is down, not slow)",
    )
    journal_dir: str = "qiao-journal"
    sync_interval: float = Field(1.0, gt=0, le=60)
    stale_after: float = Field(
        300.0, gt=0, description="serve known keys this long with the DB down"
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql:", "postgres:", "memory:")):
            raise ValueError("storage url must be sqlite:///PATH, postgresql://... or memory://")
        return v


_Rate = Annotated[Decimal, Field(ge=0, le=Decimal("1000000000"), allow_inf_nan=False)]


class DefaultPrice(_Frozen):
    """Per 1M tokens; write amounts as strings ("2.50") to keep them exact."""

    currency: Fiat = "USD"
    input: _Rate
    output: _Rate


class PricingSettings(_Frozen):
    """What a model missing from the price table costs. ``refuse`` (the default): a request
    that a money budget (USD or CNY) applies to is refused with 403 ``model_unpriced``, since
    its cost cannot be counted; ``default``: such models cost ``default_price``."""

    unpriced: Literal["refuse", "default"] = "refuse"
    default_price: DefaultPrice | None = None

    @model_validator(mode="after")
    def _default_needs_a_price(self) -> PricingSettings:
        if self.unpriced == "default" and self.default_price is None:
            raise ValueError("unpriced: default needs a default_price {currency, input, output}")
        if self.unpriced == "refuse" and self.default_price is not None:
            raise ValueError("default_price is only used with unpriced: default")
        return self

    def table(self) -> PriceTable:
        """The built-in price table under this policy."""
        table = PriceTable.default()
        d = self.default_price
        if self.unpriced == "default" and d is not None:
            table = table.with_default(Price.of(d.currency, str(d.input), str(d.output)))
        return table


class Config(_Frozen):
    listen: str = "127.0.0.1:8080"
    admin_key: SecretStr | None = None
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, tuple[Target, ...]] = Field(default_factory=dict)
    keys: tuple[KeyConfig, ...] = ()
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    pricing: PricingSettings = PricingSettings()
    source: str = Field("<memory>", exclude=True)

    @field_validator("models", mode="before")
    @classmethod
    def _single_target(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: [t] if isinstance(t, Mapping) else t for k, t in v.items()}
        return v

    @field_validator("admin_key")
    @classmethod
    def _admin_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"admin_key must be at least {MIN_KEY_LENGTH} characters")
        return v

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        parse_listen(v)
        return v

    @model_validator(mode="after")
    def _references(self) -> Config:
        for alias, targets in self.models.items():
            if not targets:
                raise ValueError(f"model {alias!r} has no targets")
            for t in targets:
                if t.provider not in self.providers:
                    raise ValueError(f"model {alias!r} names unknown provider {t.provider!r}")
        names: set[str] = set()
        secrets: set[str] = set()
        for k in self.keys:
            if k.name in names:
                raise ValueError(f"duplicate key name {k.name!r}")
            names.add(k.name)
            secret = k.key.get_secret_value()
            if secret in secrets or (
                self.admin_key and secret == self.admin_key.get_secret_value()
            ):
                raise ValueError(f"key {k.name!r} reuses another key's secret")
            secrets.add(secret)
        return self

    @property
    def admin_key_warning(self) -> str | None:
        """What to say at start-up about a short ``admin_key`` (None: nothing). A warning, not
        a refusal: failed admin authentications are throttled, and refusing would turn an
        upgrade of a running deployment into a crash loop."""
        if self.admin_key is None:
            return None
        length = len(self.admin_key.get_secret_value())
        if length >= ADMIN_KEY_ADVISED:
            return None
        return (
            f"admin_key is only {length} characters: use at least {ADMIN_KEY_ADVISED} random "
            "characters (e.g. `openssl rand -hex 24`); a short admin key can be guessed"
        )

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


def parse_listen(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


# --------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise _Missing(name)
            return default
        return value

    return _ENV_RE.sub(sub, text)


def _to_python(
    node: yaml.Node,
    env: Mapping[str, str],
    lines: dict[tuple[str, ...], int],
    path: tuple[str, ...],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                raise ConfigError(f"{key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _to_python(value_node, env, lines, (*path, key))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, env, lines, (*path, str(i))) for i, n in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == "tag:yaml.org,2002:str" and "$" in node.value:
        try:
            text = _interpolate(node.value, env)
        except _Missing as exc:
            where = ".".join(path) or "<top>"
            raise ConfigError(
                f"{node.start_mark.line + 1}: {where}: environment variable "
                f"{exc.name} is not set (use ${{{exc.name}:-default}} for a default)"
            ) from None
        return text
    constructor = yaml.SafeLoader(b"")
    return constructor.construct_object(node, deep=True)


def loads(text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate configuration text."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    lines: dict[tuple[str, ...], int] = {}
    try:
        data = {} if node is None else _to_python(node, env, lines, ())
    except ConfigError as exc:
        raise ConfigError(f"{source}:{exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping")
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, lines)) from None


def _describe(exc: ValidationError, source: str, lines: dict[tuple[str, ...], int]) -> str:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(str(p) for p in err["loc"])
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 1)
        key = ".".join(loc) or "<top>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{source}:{line}: {key}: {msg}")
    return "\n".join(out)


def load(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    return loads(text, source=str(p), env=env)


def from_env(env: Mapping[str, str] | None = None, *, listen: str | None = None) -> Config:
    """Providers from the usual variables (OPENAI_API_KEY, DEEPSEEK_API_KEY, ...).

    Models are routed by name pattern (``gpt-*`` → openai, ``deepseek-*`` →
    deepseek, ...) and by an explicit ``provider/model`` prefix. Callers
    authenticate with ``QIAO_API_KEY`` (or ``QIAO_ADMIN_KEY``).
    """
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, preset in PRESETS.items():
        key = next((env[k] for k in preset.env_keys if env.get(k)), None)
        base = env.get(preset.env_base_url) if preset.env_base_url else None
        if key is None and not (preset.key_optional and base):
            continue
        if base and preset.key_optional and not base.rstrip("/").endswith("/v1"):
            base = base.rstrip("/") + "/v1"
        providers[name] = {"type": name, "api_key": key, "base_url": base}
        for pattern in preset.model_patterns:
            models.setdefault(pattern, [{"provider": name}])
    data: dict[str, Any] = {"providers": providers, "models": models}
    if listen or env.get("QIAO_LISTEN"):
        data["listen"] = listen or env["QIAO_LISTEN"]
    if env.get("QIAO_ADMIN_KEY"):
        data["admin_key"] = env["QIAO_ADMIN_KEY"]
    if env.get("QIAO_API_KEY"):
        data["keys"] = [{"name": "default", "key": env["QIAO_API_KEY"]}]
    try:
        return Config.model_validate({**data, "source": "<environment>"})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "<environment>", {})) from None


def mock_demo(listen: str | None = None, key: str | None = None) -> Config:
    """A working gateway on the built-in mock provider (``qiao serve --demo``)."""
    data: dict[str, Any] = {
        "providers": {"mock": {"type": "mock", "mock": {"tokens_per_second": 200}}},
        "models": {
            "qiao-mock": [{"provider": "mock"}],
            "gpt-4o-mini": [{"provider": "mock"}],
            "text-embedding-3-small": [{"provider": "mock"}],
            "*": [{"provider": "mock"}],
        },
    }
    if listen:
        data["listen"] = listen
    if key:
        data["keys"] = [{"name": "demo", "key": key}]
    data["storage"] = {"url": "memory://"}
    return Config.model_validate({**data, "source": "<demo>"})
