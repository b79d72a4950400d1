"""Exchange rules that decide whether, how much and at what price an order fills.

:class:`MarketRules` says which rules apply; :func:`rule_arrays` turns them into one
value per bar and asset, computed from that bar and the one before it only (never a
later bar), which the single env (:func:`bar_rules`) and the vector env read at the
fill bar. The rules (docs/market-rules.md):

* **Sell tax by date** (``tax_schedule="krx"``): the KRX securities transaction tax
  (+ rural special tax on KOSPI) in force on the sale's settlement date, two trading
  days after the fill bar (T+2; the law taxes the transfer, :mod:`stockgym.envs.krx`).
  Without a schedule, the constant ``CostModel.sell_tax``.
* **Daily price limit** (``price_limit``): a bar is *locked up* when it traded at one
  price all day (open = high = low = close) at the upper limit,
  ``close >= prev_close * (1 + limit) * (1 - LIMIT_SLACK)``, and *locked down* at the
  lower one, ``close <= prev_close * (1 - limit) * (1 + LIMIT_SLACK)``. Buys do not fill
  on a locked-up fill bar, sells on a locked-down one (status ``"limit_locked"``).
  ``prev_close`` is the previous bar's close, or a ``prev_close`` column of the price
  frame (KRX's base price after a corporate action).
* **Ticks** (``ticks``): fill prices after slippage and impact are rounded to the tick
  in force on the fill date, against the trader (up for buys, down for sells).
* **Volume cap** (``max_participation``): an order fills at most
  ``max_participation * volume`` shares of the fill bar (floored to whole shares unless
  fractional); the rest is unfilled (status ``"capped"``).
* **Square-root impact** (``impact="sqrt"``): the fill price moves a further
  ``impact_coef * sqrt(q / volume)`` against the trader, ``q`` the order's shares after
  the volume cap (before buys are scaled to fit in cash, so never less than the filled
  size's impact).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from stockgym.envs import krx

#: Relative slack of the limit-lock test: a KRX limit price is the previous close times
#: (1 +- limit) rounded to a tick toward the previous close, at most 0.5 % away.
LIMIT_SLACK = 0.005
#: Default ``impact_coef``: Y * sigma in the square-root law dP/P = Y sigma sqrt(Q/V)
#: with Y ~ 0.5 and a daily volatility sigma ~ 2 % (10 bps at 1 % of the day's volume).
DEFAULT_IMPACT_COEF = 0.01
IMPACTS = ("sqrt",)
TAX_SCHEDULES = ("krx",)


@dataclass(frozen=True)
class MarketRules:
    """Which exchange rules apply (module docstring). ``boards``: one per asset
    (``"kospi"`` / ``"kosdaq"``), used by the KRX tax split and the pre-2023 tick tables."""

    tax_schedule: str | None = None
    boards: tuple[str, ...] = ()
    price_limit: bool = False
    ticks: bool = False
    max_participation: float | None = None
    impact: str | None = None
    impact_coef: float = DEFAULT_IMPACT_COEF

    def __post_init__(self) -> None:
        if self.tax_schedule not in (None, *TAX_SCHEDULES):
            raise ValueError(f"tax_schedule must be None or one of {TAX_SCHEDULES}")
        p = self.max_participation
        if p is not None and not (isinstance(p, (int, float)) and 0.0 < p <= 1.0):
            raise ValueError(f"max_participation must be in (0, 1], got {p!r}")
        if self.impact not in (None, *IMPACTS):
            raise ValueError(f"impact must be None or one of {IMPACTS}, got {self.impact!r}")
        c = self.impact_coef
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0.0):
            raise ValueError(f"impact_coef must be a finite number >= 0, got {c!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "boards": list(self.boards)}


def resolve_rules(
    market: str,
    symbols: list[str],
    *,
    sell_tax: float | None,
    board: str | dict[str, str] | None,
    price_limit: bool | None,
    ticks: bool | None,
    max_participation: float | None,
    impact: str | None,
    impact_coef: float | None,
    listed_boards: dict[str, str] | None = None,
) -> MarketRules:
    """The rules of ``market`` (a resolved preset name: ``krx`` turns on the tax schedule,
    price limits and ticks; ``us`` and ``none`` none of them), then the overrides. An
    explicit ``sell_tax`` replaces the schedule on every date. ``board``: one board for
    every symbol, a ``{symbol: board}`` dict, or ``None`` / ``"auto"``: the data source's
    listing (``listed_boards``, from ``prices.attrs["boards"]``), else ``"kospi"``."""
    is_krx = market == "krx"
    given = board if isinstance(board, dict) else {}
    one = None if (board is None or isinstance(board, dict) or board == "auto") else board
    listed = {str(k): _listed_board(v) for k, v in (listed_boards or {}).items()}
    boards = [krx.check_board(given.get(s) or one or listed.get(s) or "kospi") for s in symbols]
    schedule = "krx" if is_krx and sell_tax is None else None
    ticks_on = is_krx if ticks is None else bool(ticks)
    if schedule is None and not ticks_on:
        boards = []  # a board matters to the KRX tax split and tick tables only
    return MarketRules(
        tax_schedule=schedule,
        boards=tuple(boards),
        price_limit=is_krx if price_limit is None else bool(price_limit),
        ticks=ticks_on,
        max_participation=None if max_participation is None else float(max_participation),
        impact=impact,
        impact_coef=DEFAULT_IMPACT_COEF if impact_coef is None else float(impact_coef),
    )


def _listed_board(market: str) -> str:
    """A listing's market name ("KOSPI", "KOSDAQ", "KOSDAQ GLOBAL"...) as a board; other
    markets (KONEX) have their own taxes, not modelled: KOSPI's, with a warning."""
    m = str(market).lower()
    if m.startswith("kosdaq"):
        return "kosdaq"
    if m != "kospi":
        warnings.warn(f"board {market!r} is not modelled; KOSPI's rules apply", stacklevel=4)
    return "kospi"


class RuleArrays(NamedTuple):
    """The rules' values per bar and asset, ``(T, A)``."""

    sell_tax: np.ndarray  # float64 rate
    locked_up: np.ndarray  # bool: no buy fills on this bar
    locked_down: np.ndarray  # bool: no sell fills on this bar
    cap: np.ndarray  # float64 max shares per order (inf: no cap)
    volume: np.ndarray  # float64, the bar's volume (for impact)
    tick_table: np.ndarray  # int64 index into krx.TICK_TABLES (-1: no ticks)


def rule_arrays(market, rules: MarketRules, sell_tax: float, fractional: bool) -> RuleArrays:
    """:class:`RuleArrays` of a :class:`~stockgym.envs.market.MarketArrays` (each value
    from its own bar and the previous close only)."""
    dates = market.dates
    shape = market.mark.shape
    if rules.tax_schedule == "krx":  # the rate in force when a sale on the bar settles
        settle = krx.settlement_dates(dates)
        tax = np.stack([krx.sell_tax_rates(settle, b) for b in rules.boards], axis=1)
    else:
        tax = np.full(shape, float(sell_tax))
    up = np.zeros(shape, dtype=bool)
    down = np.zeros(shape, dtype=bool)
    if rules.price_limit:
        limit = krx.price_limit_rates(dates)[:, None]
        o, h, lo, c, prev = market.open, market.high, market.low, market.close, market.prev_close
        with np.errstate(invalid="ignore"):
            flat = (o == h) & (h == lo) & (lo == c) & np.isfinite(prev) & (prev > 0)
            up = flat & (c >= prev * (1.0 + limit) * (1.0 - LIMIT_SLACK))
            down = flat & (c <= prev * (1.0 - limit) * (1.0 + LIMIT_SLACK))
    volume = np.nan_to_num(market.volume, nan=0.0)
    cap = np.full(shape, np.inf)
    if rules.max_participation is not None:
        cap = rules.max_participation * volume
        if not fractional:
            cap = np.floor(cap)
    tick = np.full(shape, -1, dtype=np.int64)
    if rules.ticks:
        tick = np.stack([krx.tick_table_ids(dates, b) for b in rules.boards], axis=1)
    return RuleArrays(tax, up, down, cap, volume, tick)


def coverage_warnings(market, rules: MarketRules) -> None:
    """Warn when KRX tables are applied to dates before they are checked."""
    if rules.tax_schedule == "krx" or rules.price_limit or rules.ticks:
        msg = krx.coverage_warning(pd.Timestamp(market.dates[0]))
        if msg:
            warnings.warn(msg, stacklevel=3)


class BarRules(NamedTuple):
    """One fill bar's rules as Python lists (one entry per asset), for the single env."""

    tax: list[float]
    locked_up: list[bool]
    locked_down: list[bool]
    cap: list[float] | None  # None: no volume cap
    volume: list[float]
    ticks: list[int] | None  # None: no tick rounding
    impact: float  # impact_coef, 0.0: no impact


def bar_rules(arrays: RuleArrays, rules: MarketRules) -> list[BarRules]:
    """One :class:`BarRules` per bar (built once, so a step only indexes a list)."""
    coef = rules.impact_coef if rules.impact == "sqrt" else 0.0
    capped = rules.max_participation is not None
    out = []
    for t in range(arrays.sell_tax.shape[0]):
        out.append(
            BarRules(
                arrays.sell_tax[t].tolist(),
                arrays.locked_up[t].tolist(),
                arrays.locked_down[t].tolist(),
                arrays.cap[t].tolist() if capped else None,
                arrays.volume[t].tolist(),
                arrays.tick_table[t].tolist() if rules.ticks else None,
                coef,
            )
        )
    return out
