"""Prices: exact Decimal costs, model-name matching, currency conversion, no NaN/inf/float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from qiao.canonical.types import Usage
from qiao.config import ConfigError, loads
from qiao.pricing import (
    DEFAULT_PRICES,
    Money,
    Price,
    PriceTable,
    Rates,
    UnknownModel,
    convert,
    normalize_model,
    to_decimal,
)

TABLE = PriceTable.default()


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("GPT-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4.1-nano", "gpt-4.1-nano"),
        ("o3-2025-04-16", "o3"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("models/gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("qwen-plus-latest", "qwen-plus"),
        ("qwen-max-0919", "qwen-max"),
        ("kimi-k2-0905-preview", "kimi-k2"),
        ("deepseek-v4-pro-0813", "deepseek-v4-pro"),
        ("glm-4.6", "glm-4.6"),
        ("claude-opus-4-5", "claude-opus-4-5"),  # a version, not a date: kept
    ],
)
def test_normalize_strips_prefixes_and_snapshot_suffixes(model: str, name: str) -> None:
    assert normalize_model(model) == name


def test_every_default_row_is_found_under_its_own_name() -> None:
    for name, currency, *_ in DEFAULT_PRICES:
        price = TABLE.get(name)
        assert price is not None and price.currency == currency


def test_variants_with_other_prices_are_not_guessed() -> None:
    assert TABLE.get("kimi-k2-turbo-preview") is None
    assert TABLE.get("gpt-4o-realtime-preview") is None
    with pytest.raises(UnknownModel):
        TABLE.cost("no-such-model", Usage(input_tokens=1))


def test_cost_is_exact_with_cached_input() -> None:
    usage = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=1000)
    # 234 × 2.50 + 1000 × 1.25 + 567 × 10.00 = 7505 per 1M
    assert TABLE.cost("gpt-4o-2024-08-06", usage) == Money(Decimal("0.007505"), "USD")


def test_cost_charges_anthropic_cache_writes_at_their_rate() -> None:
    usage = Usage(
        input_tokens=3000, output_tokens=100, cache_read_tokens=1000, cache_write_tokens=1000
    )
    # 1000 × 3 + 1000 × 0.30 + 1000 × 3.75 + 100 × 15 = 8550 per 1M
    assert TABLE.cost("claude-sonnet-4-5", usage).amount == Decimal("0.00855")


def test_cost_of_one_token_is_exact() -> None:
    assert TABLE.cost("gpt-4o-mini", Usage(input_tokens=1)).amount == Decimal("0.00000015")


def test_native_cny_prices_stay_in_cny() -> None:
    cost = TABLE.cost("qwen-plus", Usage(input_tokens=100_000, output_tokens=30_000))
    assert cost == Money(Decimal("0.14"), "CNY")


@pytest.mark.parametrize(
    ("input_tokens", "amount"),
    [
        (200_000, Decimal("0.25") + Decimal("0.01")),
        (200_001, Decimal("0.5000025") + Decimal("0.015")),
    ],
)
def test_tiered_price_follows_prompt_length(input_tokens: int, amount: Decimal) -> None:
    cost = TABLE.cost("gemini-2.5-pro", Usage(input_tokens=input_tokens, output_tokens=1000))
    assert cost.amount == amount


def test_max_cost_is_an_upper_bound() -> None:
    model = "claude-sonnet-4-5"
    bound = TABLE.max_cost(model, 3000, 100).amount
    worst = Usage(input_tokens=3000, output_tokens=100, cache_write_tokens=3000)
    assert bound == TABLE.cost(model, worst).amount == Decimal("0.01275")
    assert TABLE.cost(model, Usage(input_tokens=3000, output_tokens=100)).amount < bound


def test_overrides_replace_and_add() -> None:
    table = TABLE.with_overrides(
        {"gpt-4o": Price.of("USD", "1", "2"), "my-model-2025-01-01": Price.of("CNY", "3", "4")}
    )
    assert table.cost("gpt-4o", Usage(1_000_000, 1_000_000)).amount == Decimal(3)
    assert table.cost("my-model", Usage(1_000_000, 0)) == Money(Decimal(3), "CNY")
    assert TABLE.cost("gpt-4o", Usage(1_000_000, 0)).amount == Decimal("2.50")  # unchanged


@pytest.mark.parametrize("bad", ["NaN", "sNaN", "Infinity", "-inf", "-0.01", "abc", ""])
def test_to_decimal_refuses_non_finite_negative_and_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        to_decimal(bad)


@pytest.mark.parametrize("bad", [0.1, True, None, [1]])
def test_to_decimal_refuses_floats_and_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        to_decimal(bad)


def test_to_decimal_accepts_strings_ints_and_decimals() -> None:
    assert to_decimal("0.10") == Decimal("0.10")
    assert to_decimal(3) == Decimal(3)
    assert to_decimal(Decimal("1e-9")) == Decimal("1e-9")


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-1")])
def test_money_and_rates_refuse_bad_amounts(bad: Decimal) -> None:
    with pytest.raises(ValueError):
        Money(bad, "USD")
    with pytest.raises(ValueError):
        Rates(bad, Decimal(1))
    with pytest.raises(ValueError):
        convert(Money(Decimal(1), "USD"), "CNY", bad)


def test_float_cannot_sneak_into_money() -> None:
    with pytest.raises(TypeError):
        Money(0.1, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_usage_counts_must_be_non_negative_ints(bad: object) -> None:
    with pytest.raises(ValueError):
        TABLE.cost("gpt-4o", Usage(input_tokens=bad))  # type: ignore[arg-type]


def test_convert_usd_cny_both_ways() -> None:
    rate = Decimal("7.1")
    assert convert(Money(Decimal("1.50"), "USD"), "CNY", rate) == Money(Decimal("10.650"), "CNY")
    assert convert(Money(Decimal("7.1"), "CNY"), "USD", rate).amount == Decimal(1)
    assert convert(Money(Decimal(2), "CNY"), "CNY", rate).amount == Decimal(2)
    with pytest.raises(ValueError):
        convert(Money(Decimal(1), "USD"), "CNY", Decimal(0))


# ----------------------------------------------------------------------------- unpriced models


def test_default_price_covers_only_models_the_table_does_not_know() -> None:
    fallback = Price.of("CNY", "5", "20")
    table = TABLE.with_default(fallback).with_overrides({"my-model": Price.of("USD", "1", "2")})
    assert table.get("no-such-model") is fallback
    assert table.cost("no-such-model", Usage(input_tokens=1_000_000)) == Money(Decimal(5), "CNY")
    assert table.get("gpt-4o-mini") == TABLE.get("gpt-4o-mini")
    assert table.get("my-model") == Price.of("USD", "1", "2")
    assert TABLE.get("no-such-model") is None  # the table it came from is unchanged


@pytest.mark.parametrize(
    ("pricing", "error"),
    [
        ("{unpriced: default}", "needs a default_price"),
        ("{default_price: {input: '1', output: '1'}}", "only used with unpriced: default"),
        ("{unpriced: free}", "pricing.unpriced"),
        ("{unpriced: default, default_price: {input: '-1', output: '1'}}", "input"),
        (
            "{unpriced: default, default_price: {input: '1', output: '1', currency: EUR}}",
            "currency",
        ),
    ],
)
def test_pricing_config_is_explicit(pricing: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        loads(f"pricing: {pricing}\n")


def test_pricing_config_builds_the_table() -> None:
    assert loads("listen: 127.0.0.1:0\n").pricing.table().get("no-such-model") is None
    config = loads("pricing: {unpriced: default, default_price: {input: '3', output: '15'}}\n")
    price = config.pricing.table().get("no-such-model")
    assert price == Price.of("USD", "3", "15")
