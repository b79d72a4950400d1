"""Trading-cost presets (rates are fractions of traded value; slippage in basis points).

| preset | commission (both sides) | sell tax | slippage | source / year |
|---|---|---|---|---|
| ``"krx"`` | 0.015 % (0.00015) | by date (0.30 % to 0.15 %; 0.20 % in 2026) | 5 bps | typical Korean online-broker fee; the securities transaction tax (+ rural special tax on KOSPI) in force on the settlement date (T+2), :data:`stockgym.envs.krx.TAX_SCHEDULE`; ``sell_tax=`` overrides it on every date. The preset's ``sell_tax`` field (0.20 %, the 2026 rate) is the rate the schedule replaces. |
| ``"us"`` | 0.05 % (0.0005) | 0 | 5 bps | a conservative stand-in for per-share US broker fees; no US transaction tax |
| ``"none"`` | 0 | 0 | 0 | frictionless, for teaching |

The ``krx`` preset also turns on KRX's daily price limits and tick sizes
(:mod:`stockgym.envs.rules`). Every preset has ``min_commission=0`` and ``borrow_rate=0`` (annual rate charged on the
market value of short positions, accrued daily over 252 trading days). Any field can be
overridden by the env's keyword arguments, and the resolved values are printed in every
report.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

MARKETS = ("krx", "us", "none")


@dataclass(frozen=True)
class CostModel:
    """Units: ``commission``, ``sell_tax`` and ``borrow_rate`` are rates (0.001 = 0.1 %);
    ``slippage_bps`` in basis points (1 bp = 0.01 %); ``min_commission`` in currency per
    order (charged instead of the proportional fee when larger)."""

    commission: float = 0.0
    sell_tax: float = 0.0
    slippage_bps: float = 0.0
    min_commission: float = 0.0
    borrow_rate: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (value >= 0.0) or value != value or value == float("inf"):
                raise ValueError(f"cost {name} must be a finite number >= 0, got {value!r}")
        if self.commission >= 1 or self.sell_tax >= 1 or self.slippage_bps >= 1e4:
            raise ValueError(f"costs must be below 100 %: {self}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS = {
    "krx": CostModel(commission=0.00015, sell_tax=0.0020, slippage_bps=5.0),
    "us": CostModel(commission=0.0005, sell_tax=0.0, slippage_bps=5.0),
    "none": CostModel(),
}


def market_of(symbol: str) -> str:
    """Market preset for a symbol: six-digit codes (``005930``) are KRX, others US."""
    return "krx" if re.fullmatch(r"\d{6}", str(symbol)) else "us"


def resolve_market(market: str, symbols: list[str]) -> str:
    """The preset name: ``market``, or for "auto" the first symbol's market."""
    if market == "auto":
        market = market_of(symbols[0]) if symbols else "none"
    if market not in PRESETS:
        raise ValueError(f"unknown market {market!r}; choose one of {MARKETS} or 'auto'")
    return market


def resolve_costs(market: str, symbols: list[str], **overrides: float | None) -> CostModel:
    """Preset for ``market`` ("auto" picks it from the first symbol), then overrides."""
    market = resolve_market(market, symbols)
    given = {k: float(v) for k, v in overrides.items() if v is not None}
    return replace(PRESETS[market], **given)
