"""Prices, the cost of token usage and the amortization maths."""

from __future__ import annotations

import pytest

from latm.bench.costs import (
    DEFAULT_PRICES,
    PriceError,
    break_even,
    cost_at,
    load_prices,
    parse_prices,
    sum_usage,
)

TABLE = """
[cheap]
note = "test"
maker = { model = "big", input = 10.0, output = 20.0 }
user = { model = "small", input = 1.0, output = 2.0 }
"""


def usage(i: int, o: int, calls: int = 1) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o, "calls": calls}


def test_shipped_table_has_the_papers_prices_and_free_local_models():
    prices = load_prices()
    paper = prices["paper-2023"]
    assert (paper.roles["maker"].input, paper.roles["maker"].output) == (30.0, 60.0)
    assert (paper.roles["user"].input, paper.roles["user"].output) == (2.0, 2.0)
    local = prices["local"]
    assert local.cost({"maker": usage(10**6, 10**6), "user": usage(10**6, 10**6)}) == 0
    assert load_prices(DEFAULT_PRICES).keys() == prices.keys()


def test_cost_prices_each_role_per_million_tokens():
    preset = parse_prices(TABLE)["cheap"]
    cost = preset.cost({"maker": usage(1_000, 500), "user": usage(2_000, 1_000)})
    assert cost == pytest.approx((1_000 * 10 + 500 * 20 + 2_000 * 1 + 1_000 * 2) / 1e6)
    assert preset.cost({}) == 0
    assert preset.cost({"other": usage(10**6, 10**6)}) == 0  # an unpriced role costs nothing
    assert preset.as_dict()["maker"] == {"model": "big", "input": 10.0, "output": 20.0}


def test_user_price_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(TABLE)
    assert list(load_prices(path)) == ["cheap"]
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("", "defines no price preset"),
        ("[x]\nmaker = { input = 1, output = 1 }\n", "no price for user"),
        ("[x]\nmaker = { input = 1 }\nuser = { input = 1, output = 1 }\n", "numeric"),
        ("[x]\nmaker = { input = -1, output = 1 }\nuser = { input = 1, output = 1 }\n", "negative"),
        ("[x]\nmaker = 3\nuser = { input = 1, output = 1 }\n", "must be a table"),
        ("x = 1\n", "must be a table"),
    ],
)
def test_malformed_tables_are_clear_errors(text, message):
    with pytest.raises(PriceError, match=message):
        parse_prices(text)


def test_sum_usage_adds_per_role():
    total = sum_usage([{"maker": usage(1, 2)}, None, {"maker": usage(3, 4), "user": usage(5, 6)}])
    assert total == {"maker": usage(4, 6, 2), "user": usage(5, 6)}


def test_cost_at_is_fixed_plus_n_per_item():
    assert cost_at(0, 5.0, 0.5) == 5.0
    assert cost_at(10, 5.0, 0.5) == 10.0


@pytest.mark.parametrize(
    ("fixed", "per_item", "other", "expected"),
    [
        (10.0, 1.0, 3.0, 5),  # 10 + 5*1 = 15 = 5*3
        (10.0, 1.0, 4.0, 4),  # 10 + 4 = 14 <= 16, but 10 + 3 = 13 > 12
        (0.3, 0.1, 0.2, 3),  # float noise must not push it to 4
        (0.0, 1.0, 3.0, 1),
        (10.0, 3.0, 3.0, None),  # no saving per request: never
        (10.0, 4.0, 3.0, None),
        (0.0, 0.0, 0.0, 1),  # all free: never dearer
        (0.0, 4.0, 3.0, None),
    ],
)
def test_break_even(fixed, per_item, other, expected):
    n = break_even(fixed, per_item, other)
    assert n == expected
    if n is not None:
        # from n on the method is not dearer, and just before n it was
        for m in (n, n + 1, n + 100):
            assert cost_at(m, fixed, per_item) <= cost_at(m, 0.0, other) + 1e-12
        if n > 1:
            assert cost_at(n - 1, fixed, per_item) > cost_at(n - 1, 0.0, other)


def test_break_even_against_a_method_with_its_own_fixed_cost():
    assert break_even(10.0, 1.0, 2.0, other_fixed=4.0) == 6
