"""Cost accounting: token usage priced per role, and LATM's amortization.

Prices come from a small TOML table (``prices.toml`` beside this module, or a
user's file): each preset gives USD per 1M input and output tokens for the
``maker`` and the ``user`` role. A method's cost as n requests arrive is
``fixed + n * per_item``: LATM's fixed part is tool making, its per-item part
the tool user's calls; direct answering has no fixed part.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PRICES = Path(__file__).with_name("prices.toml")
ROLES = ("maker", "user")
PER = 1_000_000


class PriceError(ValueError):
    """A price table is missing, unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class Price:
    """The price of one role's tokens.

    Attributes:
        input: USD per 1M input (prompt) tokens.
        output: USD per 1M output (completion) tokens.
        model: Which model the price is for (information only).
    """

    input: float
    output: float
    model: str = ""

    def cost(self, usage: Mapping[str, Any]) -> float:
        """The USD cost of a usage record (``input_tokens``, ``output_tokens``)."""
        tokens_in = int(usage.get("input_tokens", 0))
        tokens_out = int(usage.get("output_tokens", 0))
        return (tokens_in * self.input + tokens_out * self.output) / PER


@dataclass(frozen=True)
class PricePreset:
    """Prices of both roles under one name.

    Attributes:
        name: The preset's name (its table in the TOML file).
        note: What the prices are.
        roles: The price of each role (``maker``, ``user``).
    """

    name: str
    note: str
    roles: dict[str, Price] = field(default_factory=dict)

    def cost(self, usage: Mapping[str, Mapping[str, Any]]) -> float:
        """The USD cost of usage per role (``{"maker": {...}, "user": {...}}``)."""
        return sum(self.roles[role].cost(u) for role, u in usage.items() if role in self.roles)

    def as_dict(self) -> dict[str, Any]:
        """The preset as JSON-ready data."""
        return {
            "note": self.note,
            **{
                role: {"model": p.model, "input": p.input, "output": p.output}
                for role, p in self.roles.items()
            },
        }


def _price(where: str, raw: Any) -> Price:
    if not isinstance(raw, dict):
        raise PriceError(f"{where} must be a table like {{ input = 1.0, output = 2.0 }}")
    try:
        price = Price(
            input=float(raw["input"]), output=float(raw["output"]), model=str(raw.get("model", ""))
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PriceError(f"{where} needs numeric 'input' and 'output' (USD per 1M)") from exc
    if (
        price.input < 0
        or price.output < 0
        or not all(map(math.isfinite, (price.input, price.output)))
    ):
        raise PriceError(f"{where}: prices must be finite and non-negative")
    return price


def parse_prices(text: str, source: str = "prices") -> dict[str, PricePreset]:
    """Parse a price table (TOML text) into presets.

    Raises:
        PriceError: The text is not TOML, or a preset lacks a role or a number.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"{source} is not valid TOML: {exc}") from exc
    presets: dict[str, PricePreset] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise PriceError(f"{source}: [{name}] must be a table with 'maker' and 'user'")
        missing = [role for role in ROLES if role not in table]
        if missing:
            raise PriceError(f"{source}: [{name}] has no price for {', '.join(missing)}")
        roles = {role: _price(f"{source}: [{name}].{role}", table[role]) for role in ROLES}
        presets[name] = PricePreset(name=name, note=str(table.get("note", "")), roles=roles)
    if not presets:
        raise PriceError(f"{source} defines no price preset")
    return presets


def load_prices(path: str | Path | None = None) -> dict[str, PricePreset]:
    """Load the price presets from ``path`` (default: the shipped ``prices.toml``).

    Raises:
        PriceError: The file cannot be read or is malformed.
    """
    file = Path(path) if path else DEFAULT_PRICES
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceError(f"cannot read the price table {file}: {exc.strerror or exc}") from exc
    return parse_prices(text, str(path) if path else "prices.toml")


def add_usage(
    total: dict[str, dict[str, int]], usage: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, int]]:
    """Add usage per role into ``total`` (in place) and return it."""
    for role, u in (usage or {}).items():
        acc = total.setdefault(
            role, {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "calls": 0}
        )
        for key in acc:
            acc[key] += int(u.get(key, 0))
    return total


def sum_usage(
    usages: Iterable[Mapping[str, Mapping[str, Any]] | None],
) -> dict[str, dict[str, int]]:
    """Usage per role summed over many records."""
    total: dict[str, dict[str, int]] = {}
    for usage in usages:
        add_usage(total, usage)
    return total


def cost_at(n: int | float, fixed: float, per_item: float) -> float:
    """Total cost after ``n`` requests: ``fixed + n * per_item``."""
    return fixed + n * per_item


def break_even(
    fixed: float, per_item: float, other_per_item: float, other_fixed: float = 0.0
) -> int | None:
    """The smallest n >= 1 from which on a method costs no more than another one.

    The method costs ``fixed + n * per_item`` (LATM: making the tool, then using
    it), the other ``other_fixed + n * other_per_item`` (direct answering: no
    fixed part).

    Returns:
        That n (for this and every larger n the method is not dearer), or
        ``None`` when the method stays dearer as n grows.
    """
    gap = fixed - other_fixed  # how much more the method costs up front
    saving = other_per_item - per_item  # how much less it costs per request
    eps = 1e-12 * max(1.0, abs(fixed), abs(other_fixed))
    if saving > 1e-15:
        return max(1, math.ceil(gap / saving - 1e-9))
    if saving >= -1e-15 and gap <= eps:
        return 1  # same cost per request and no dearer up front
    return None
