"""What a request costs: a Decimal price table, model-name matching and currency conversion.

Prices are per 1M tokens, in the currency the provider bills in (``USD``, or ``CNY`` for the
domestic platforms of DeepSeek, Qwen, Kimi and GLM). Money is ``Decimal`` built from strings or
ints only: floats, NaN, infinities and negative amounts are refused at every entry point, so none
of them can reach a budget.

:data:`DEFAULT_PRICES` is a starting table, not the truth: prices change often (DeepSeek bills
peak / off-peak; Qwen and GLM tier by prompt length). Operators override entries from config
with :meth:`PriceTable.with_overrides`. Where a provider has two rates we keep the higher one,
so reservations stay an upper bound.

A model missing from the table has no price: :meth:`PriceTable.get` answers None, and a money
budget refuses it (it cannot be enforced at cost 0). :meth:`PriceTable.with_default` gives such
models one operator-chosen price instead (config ``pricing.unpriced: default``).

Canonical usage counts cached and cache-written tokens *inside* ``input_tokens`` and reasoning
tokens inside ``output_tokens`` (see :class:`qiao.canonical.types.Usage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .canonical.types import Usage

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_USD_CNY",
    "Fiat",
    "Money",
    "Price",
    "PriceTable",
    "Rates",
    "UnknownModel",
    "check_amount",
    "convert",
    "normalize_model",
    "to_decimal",
]

Fiat = Literal["USD", "CNY"]
_FIATS = ("USD", "CNY")
_ZERO = Decimal(0)
DEFAULT_USD_CNY = Decimal("7.1")  # a default only: configure the rate you settle at
_MEMO_MAX = 4096


class UnknownModel(LookupError):
    """No price is known for this model: cost cannot be computed (or reserved)."""


def to_decimal(value: object, what: str = "amount") -> Decimal:
    """A finite, non-negative Decimal from a str, an int or a Decimal; floats are refused
    (they cannot say 0.1 exactly — quote the number instead)."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise TypeError(f"{what} must be a string, an int or a Decimal, not {type(value).__name__}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    check_amount(d, what)
    return d


def check_amount(d: Decimal, what: str) -> None:
    if not isinstance(d, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(d).__name__}")
    if not d.is_finite():
        raise ValueError(f"{what} must be finite, got {d}")
    if d < 0:
        raise ValueError(f"{what} must not be negative, got {d}")


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: Fiat

    def __post_init__(self) -> None:
        check_amount(self.amount, "amount")
        if self.currency not in _FIATS:
            raise ValueError(f"unknown currency {self.currency!r}")


def convert(money: Money, to: Fiat, usd_cny: Decimal) -> Money:
    """``money`` in ``to`` at ``usd_cny`` yuan per dollar (exact for USD→CNY; CNY→USD is a
    division, rounded to the Decimal context's 28 significant digits)."""
    check_amount(usd_cny, "usd_cny")
    if usd_cny == 0:
        raise ValueError("usd_cny must be positive")
    if money.currency == to:
        return money
    if to == "CNY":
        return Money(money.amount * usd_cny, "CNY")
    if to == "USD":
        return Money(money.amount / usd_cny, "USD")
    raise ValueError(f"unknown currency {to!r}")


@dataclass(frozen=True, slots=True)
class Rates:
    """One price tier, per 1M tokens. ``up_to``: the tier applies to prompts of at most this
    many input tokens (None: any). Cache rates default to the input rate."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    up_to: int | None = None

    def __post_init__(self) -> None:
        check_amount(self.input, "input price")
        check_amount(self.output, "output price")
        for name in ("cached_input", "cache_write"):
            value = getattr(self, name)
            if value is not None:
                check_amount(value, name)
        if self.up_to is not None and (isinstance(self.up_to, bool) or self.up_to <= 0):
            raise ValueError("up_to must be a positive token count")


@dataclass(frozen=True, slots=True)
class Price:
    currency: Fiat
    tiers: tuple[Rates, ...]

    def __post_init__(self) -> None:
        if self.currency not in _FIATS:
            raise ValueError(f"unknown currency {self.currency!r}")
        if not self.tiers:
            raise ValueError("a price needs at least one tier")

    @classmethod
    def of(
        cls,
        currency: Fiat,
        input: str,
        output: str,
        cached_input: str | None = None,
        cache_write: str | None = None,
    ) -> Price:
        """A single-tier price from decimal strings."""
        return cls(currency, (_rates(input, output, cached_input, cache_write),))

    def tier(self, input_tokens: int) -> Rates:
        for rates in self.tiers:
            if rates.up_to is None or input_tokens <= rates.up_to:
                return rates
        return self.tiers[-1]


def _rates(
    input: str, output: str, cached: str | None, write: str | None, up_to: int | None = None
) -> Rates:
    return Rates(
        to_decimal(input, "input price"),
        to_decimal(output, "output price"),
        None if cached is None else to_decimal(cached, "cached input price"),
        None if write is None else to_decimal(write, "cache write price"),
        up_to,
    )


def _count(value: int, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is not int here, nor is an int subclass
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return value


# Trailing parts that name a snapshot of the same model, stripped one at a time.
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"-\d{2}-\d{2,4}$"),  # gemini-2.5-flash-preview-05-20, -09-2025
    re.compile(r"[-@]\d{3,8}$"),  # claude-…-20250929, @20250929, qwen-max-0919, -001
    re.compile(r"-v\d+(?::\d+)?$"),  # bedrock -v1:0
    re.compile(r"-(?:latest|preview|exp|experimental|stable)$"),
)
_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic|amazon|meta|mistral|cohere|deepseek|qwen)\.")


def normalize_model(model: str) -> str:
    """The table name for a model id: lower case, provider prefixes and date/snapshot suffixes
    removed (``openai/gpt-4o-2024-08-06`` → ``gpt-4o``; ``us.anthropic.claude-sonnet-4-5-
    20250929-v1:0`` → ``claude-sonnet-4-5``)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = _PREFIX.sub("", name)
    changed = True
    while changed:
        changed = False
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", name)
            if stripped != name and stripped:
                name, changed = stripped, True
    return name


class PriceTable:
    """Immutable prices by normalized model name, with a bounded memo of looked-up ids.
    ``fallback``: the price of every model not in the table (None: such models are unpriced)."""

    def __init__(self, prices: Mapping[str, Price], fallback: Price | None = None) -> None:
        self._prices = {normalize_model(name): price for name, price in prices.items()}
        self._fallback = fallback
        self._memo: dict[str, Price | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        return cls(_default_prices())

    def with_overrides(self, prices: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self._prices, **prices}, self._fallback)

    def with_default(self, fallback: Price | None) -> PriceTable:
        """This table, pricing every model it does not know at ``fallback``."""
        return PriceTable(self._prices, fallback)

    def names(self) -> list[str]:
        return sorted(self._prices)

    def get(self, model: str) -> Price | None:
        memo = self._memo
        if model in memo:
            return memo[model]
        price = self._prices.get(model) or self._prices.get(normalize_model(model))
        if price is None:
            price = self._fallback
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[model] = price
        return price

    def price(self, model: str) -> Price:
        price = self.get(model)
        if price is None:
            raise UnknownModel(f"no price for model {model!r}")
        return price

    def cost(self, model: str, usage: Usage) -> Money:
        """The exact cost of ``usage`` (no rounding)."""
        price = self.price(model)
        total = _count(usage.input_tokens, "input_tokens")
        read = _count(usage.cache_read_tokens, "cache_read_tokens")
        write = _count(usage.cache_write_tokens, "cache_write_tokens")
        out = _count(usage.output_tokens, "output_tokens")
        r = price.tier(total)
        fresh = max(0, total - read - write)
        amount = (
            fresh * r.input
            + read * (r.input if r.cached_input is None else r.cached_input)
            + write * (r.input if r.cache_write is None else r.cache_write)
            + out * r.output
        )
        return Money(amount.scaleb(-6), price.currency)

    def max_cost(self, model: str, input_estimate: int, max_output_tokens: int) -> Money:
        """An upper bound for a reservation: every input token at the dearest input rate
        (cache writes cost more than plain input at Anthropic) and all ``max_output_tokens``."""
        price = self.price(model)
        r = price.tier(_count(input_estimate, "input_estimate"))
        dearest = r.input if r.cache_write is None else max(r.input, r.cache_write)
        outputs = _count(max_output_tokens, "max_output_tokens")
        amount = input_estimate * dearest + outputs * r.output
        return Money(amount.scaleb(-6), price.currency)


# name, currency, input, output, cached input, cache write — per 1M tokens. Checked 2026; verify.
_Row = tuple[str, Fiat, str, str, str | None, str | None]
DEFAULT_PRICES: tuple[_Row, ...] = (
    # OpenAI
    ("gpt-4o", "USD", "2.50", "10.00", "1.25", None),
    ("gpt-4o-mini", "USD", "0.15", "0.60", "0.075", None),
    ("gpt-4.1", "USD", "2.00", "8.00", "0.50", None),
    ("gpt-4.1-mini", "USD", "0.40", "1.60", "0.10", None),
    ("gpt-4.1-nano", "USD", "0.10", "0.40", "0.025", None),
    ("gpt-5", "USD", "1.25", "10.00", "0.125", None),
    ("gpt-5.1", "USD", "1.25", "10.00", "0.125", None),
    ("gpt-5-mini", "USD", "0.25", "2.00", "0.025", None),
    ("gpt-5-nano", "USD", "0.05", "0.40", "0.005", None),
    ("gpt-5-pro", "USD", "15.00", "120.00", None, None),
    ("o3", "USD", "2.00", "8.00", "0.50", None),
    ("o3-pro", "USD", "20.00", "80.00", None, None),
    ("o3-mini", "USD", "1.10", "4.40", "0.55", None),
    ("o4-mini", "USD", "1.10", "4.40", "0.275", None),
    # Anthropic (cache write = the 5-minute rate)
    ("claude-opus-4", "USD", "15.00", "75.00", "1.50", "18.75"),
    ("claude-opus-4-1", "USD", "15.00", "75.00", "1.50", "18.75"),
    ("claude-opus-4-5", "USD", "5.00", "25.00", "0.50", "6.25"),
    ("claude-opus-4-6", "USD", "5.00", "25.00", "0.50", "6.25"),
    ("claude-opus-4-7", "USD", "5.00", "25.00", "0.50", "6.25"),
    ("claude-sonnet-4", "USD", "3.00", "15.00", "0.30", "3.75"),
    ("claude-sonnet-4-5", "USD", "3.00", "15.00", "0.30", "3.75"),
    ("claude-sonnet-4-6", "USD", "3.00", "15.00", "0.30", "3.75"),
    ("claude-haiku-4-5", "USD", "1.00", "5.00", "0.10", "1.25"),
    ("claude-3-7-sonnet", "USD", "3.00", "15.00", "0.30", "3.75"),
    ("claude-3-5-haiku", "USD", "0.80", "4.00", "0.08", "1.00"),
    # Google (2.5 Pro is tiered below)
    ("gemini-2.5-flash", "USD", "0.30", "2.50", "0.03", None),
    ("gemini-2.5-flash-lite", "USD", "0.10", "0.40", "0.01", None),
    # DeepSeek, domestic CNY at peak rates (off-peak is half); chat/reasoner are legacy aliases
    ("deepseek-v4-flash", "CNY", "2", "8", "0.04", None),
    ("deepseek-flash", "CNY", "2", "8", "0.04", None),
    ("deepseek-chat", "CNY", "2", "8", "0.04", None),
    ("deepseek-reasoner", "CNY", "2", "8", "0.04", None),
    ("deepseek-v4-pro", "CNY", "9", "27", "0.30", None),
    # Alibaba Qwen (Bailian, CNY; thinking-mode output costs more on plus/turbo)
    ("qwen-max", "CNY", "2.4", "9.6", None, None),
    ("qwen-plus", "CNY", "0.8", "2", None, None),
    ("qwen-turbo", "CNY", "0.3", "0.6", None, None),
    # Moonshot Kimi (CNY)
    ("kimi-k2", "CNY", "4", "16", "1", None),
    ("kimi-k2-thinking", "CNY", "4", "16", "1", None),
)

# Prices that change with the prompt length: (name, currency, tiers).
_TIERED: tuple[tuple[str, Fiat, tuple[tuple[int | None, str, str, str | None], ...]], ...] = (
    (
        "gemini-2.5-pro",
        "USD",
        ((200_000, "1.25", "10.00", "0.125"), (None, "2.50", "15.00", "0.25")),
    ),
    ("glm-4.6", "CNY", ((32_000, "3", "14", "0.6"), (None, "4", "16", "0.8"))),
)


def _default_prices() -> dict[str, Price]:
    prices = {name: Price.of(currency, i, o, c, w) for name, currency, i, o, c, w in DEFAULT_PRICES}
    for name, currency, tiers in _TIERED:
        prices[name] = Price(currency, tuple(_rates(i, o, c, None, up) for up, i, o, c in tiers))
    return prices
