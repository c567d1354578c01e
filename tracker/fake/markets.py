"""Markets the fake knows (pure): symbols, currencies, decimals, the `markets/` response rows."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Market:
    symbol: str  # wire symbol: btcusd, btcusd-perp
    base: str  # lowercase currency code: btc
    quote: str  # usd
    mid: Decimal  # centre of generated prices
    amount_places: int = 8
    price_places: int = 2
    quote_places: int = 2  # fees and quote amounts
    perp: bool = False

    @property
    def name(self) -> str:
        """Display form: ``BTC/USD`` or ``BTC/USD-PERP``."""
        return f"{self.base.upper()}/{self.quote.upper()}" + ("-PERP" if self.perp else "")

    def markets_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "market_symbol": self.symbol,
            "base_currency": self.base.upper(),
            "base_decimals": self.amount_places,
            "counter_currency": self.quote.upper(),
            "counter_decimals": self.price_places,
            "minimum_order_value": "10.00",
            "maximum_order_value": "10000000.00",
            "minimum_order_amount": "0.00000001",
            "maximum_order_amount": "1000.00000000",
            "trading": "Enabled",
            "instant_and_market_orders": "Enabled",
            "description": f"{self.base.upper()} / {self.quote.upper()}" + (" perpetual" if self.perp else ""),
            "market_type": "PERPETUAL" if self.perp else "SPOT",
            "underlying_asset": self.base.upper() if self.perp else None,
            "payoff_type": "LINEAR" if self.perp else None,
            "contract_size": "1" if self.perp else None,
            "tick_size": "0.01",
            "isin": None,
        }


KNOWN_MARKETS: dict[str, Market] = {
    m.symbol: m
    for m in (
        Market("btcusd", "btc", "usd", Decimal("61000")),
        Market("ethusd", "eth", "usd", Decimal("2400")),
        Market("btceur", "btc", "eur", Decimal("56000")),
        Market("ethbtc", "eth", "btc", Decimal("0.04"), price_places=8, quote_places=8),
        Market("xrpusd", "xrp", "usd", Decimal("0.5"), price_places=5, quote_places=5),
        Market("btcusd-perp", "btc", "usd", Decimal("61000"), perp=True),
        Market("ethusd-perp", "eth", "usd", Decimal("2400"), perp=True),
    )
}

DEFAULT_MARKETS: tuple[str, ...] = ("btcusd", "ethusd", "btcusd-perp")


def resolve_markets(symbols: tuple[str, ...] | list[str]) -> tuple[Market, ...]:
    out = []
    for s in symbols:
        if s not in KNOWN_MARKETS:
            raise ValueError(f"unknown market {s!r}; known: {', '.join(KNOWN_MARKETS)}")
        out.append(KNOWN_MARKETS[s])
    return tuple(out)
