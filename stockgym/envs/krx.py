"""Korea Exchange (KRX) rules by date: the sell-side taxes, the daily price limit and the
tick-size tables. Data only, in one place, so a change of the law is one new row.

Each table is a tuple of rows sorted by the date the row takes effect (inclusive); a
date uses the last row that took effect on or before it. Sources and the history of
each row: ``docs/market-rules.md`` (section "KRX rules by date").

Dates before the first row of a table use its first row: the tables are checked from
2015 on (the price-limit table from 1998-12-07), and :func:`coverage_warning` says so
when data start earlier.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

BOARDS = ("kospi", "kosdaq")


class TaxRow(NamedTuple):
    """Sell-side tax rates (fractions of the sale value) from ``since`` on.

    KOSPI: securities transaction tax ``kospi_stt`` plus the rural special tax
    ``kospi_rural`` (0.15 %); KOSDAQ: the securities transaction tax ``kosdaq_stt``
    alone (no rural special tax)."""

    since: str
    kospi_stt: float
    kospi_rural: float
    kosdaq_stt: float


#: Securities transaction tax (+ rural special tax on KOSPI) on exchange sales, by the
#: settlement date (the taxable transfer; T+2 after the trade).
TAX_SCHEDULE: tuple[TaxRow, ...] = (
    TaxRow("2015-01-01", 0.0015, 0.0015, 0.0030),  # 0.30 % in total on both boards
    TaxRow("2019-06-03", 0.0010, 0.0015, 0.0025),  # 0.25 %
    TaxRow("2021-01-01", 0.0008, 0.0015, 0.0023),  # 0.23 %
    TaxRow("2023-01-01", 0.0005, 0.0015, 0.0020),  # 0.20 %
    TaxRow("2024-01-01", 0.0003, 0.0015, 0.0018),  # 0.18 %
    TaxRow("2025-01-01", 0.0000, 0.0015, 0.0015),  # 0.15 %
    TaxRow("2026-01-01", 0.0005, 0.0015, 0.0020),  # 0.20 %
)

#: Daily price limit: a fraction of the base price (the previous close), both ways.
PRICE_LIMITS: tuple[tuple[str, float], ...] = (
    ("1998-12-07", 0.15),
    ("2015-06-15", 0.30),
)

# A tick table: (edges, ticks) - prices below edges[0] move in ticks[0], prices in
# [edges[k-1], edges[k]) in ticks[k], at or above edges[-1] in ticks[-1].
UNIFIED = ((2_000, 5_000, 20_000, 50_000, 200_000, 500_000), (1, 5, 10, 50, 100, 500, 1_000))
KOSPI_BEFORE_2023 = (
    (1_000, 5_000, 10_000, 50_000, 100_000, 500_000),
    (1, 5, 10, 50, 100, 500, 1_000),
)
KOSDAQ_BEFORE_2023 = ((1_000, 5_000, 10_000, 50_000), (1, 5, 10, 50, 100))
#: Every tick table, indexed by the ids :func:`tick_table_ids` returns.
TICK_TABLES = (UNIFIED, KOSPI_BEFORE_2023, KOSDAQ_BEFORE_2023)
#: The unified table (both boards) applies from this date; before it, one per board.
UNIFIED_TICKS_SINCE = "2023-01-25"
#: The first date every table here is checked for.
COVERED_FROM = "2015-01-01"


def check_board(board: str) -> str:
    b = str(board).lower()
    if b not in BOARDS:
        raise ValueError(f"board must be one of {BOARDS}, got {board!r}")
    return b


def _row_index(since: Sequence[str], dates: pd.DatetimeIndex) -> np.ndarray:
    starts = pd.DatetimeIndex([pd.Timestamp(s) for s in since])
    return np.maximum(starts.searchsorted(dates, side="right") - 1, 0)


def _naive(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return dates.tz_localize(None) if dates.tz is not None else dates


def tax_parts(date, board: str) -> tuple[float, float]:
    """(securities transaction tax, rural special tax) on a sale settling on ``date``."""
    b = check_board(board)
    row = TAX_SCHEDULE[int(_row_index([r.since for r in TAX_SCHEDULE], _day(date))[0])]
    return (row.kospi_stt, row.kospi_rural) if b == "kospi" else (row.kosdaq_stt, 0.0)


def _day(date) -> pd.DatetimeIndex:
    return _naive(pd.DatetimeIndex([pd.Timestamp(date)]))


#: KRX equity trades settle two trading days after the trade (T+2).
SETTLEMENT_LAG = 2


def _next_trading_day(day: pd.Timestamp) -> pd.Timestamp:
    """The next weekday that is not Dec 31 or Jan 1 (KRX is closed on both every year;
    other holidays move with the lunar calendar and are not known here)."""
    day = day + pd.Timedelta(days=1)
    while day.weekday() >= 5 or (day.month, day.day) in ((12, 31), (1, 1)):
        day = day + pd.Timedelta(days=1)
    return day


def settlement_dates(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The settlement date of a trade on each of ``dates``: ``SETTLEMENT_LAG`` trading
    days later in ``dates`` itself (the exchange calendar the data follow; only the
    dates are read, never a later bar's prices), continued past the last date with
    weekdays other than Dec 31 and Jan 1 (so a sale in the last bars of a year still
    settles in the right year)."""
    d = _naive(dates)
    tail = [d[-1]]
    for _ in range(SETTLEMENT_LAG):
        tail.append(_next_trading_day(tail[-1]))
    return d[SETTLEMENT_LAG:].append(pd.DatetimeIndex(tail[1:]))


def sell_tax_rates(dates: pd.DatetimeIndex, board: str) -> np.ndarray:
    """Total sell-side tax rate of a sale settling on each of ``dates`` (float64): the
    tax is due on the transfer, which for exchange trades is the settlement (use
    :func:`settlement_dates` to go from trade dates to settlement dates)."""
    b = check_board(board)
    idx = _row_index([r.since for r in TAX_SCHEDULE], _naive(dates))
    per_row = np.array(
        [r.kospi_stt + r.kospi_rural if b == "kospi" else r.kosdaq_stt for r in TAX_SCHEDULE]
    )
    return per_row[idx]


def price_limit_rates(dates: pd.DatetimeIndex) -> np.ndarray:
    """The daily price limit (fraction of the previous close) on each of ``dates``."""
    idx = _row_index([s for s, _ in PRICE_LIMITS], _naive(dates))
    return np.array([r for _, r in PRICE_LIMITS])[idx]


def tick_table_ids(dates: pd.DatetimeIndex, board: str) -> np.ndarray:
    """Index into :data:`TICK_TABLES` of the tick table in force on each of ``dates``."""
    b = check_board(board)
    unified = _naive(dates) >= pd.Timestamp(UNIFIED_TICKS_SINCE)
    return np.where(unified, 0, 1 if b == "kospi" else 2).astype(np.int64)


def tick_size(price: float, table: int) -> int:
    """The tick of ``price`` in tick table ``table`` (an index into :data:`TICK_TABLES`)."""
    edges, ticks = TICK_TABLES[table]
    return ticks[bisect.bisect_right(edges, price)]


#: Float slack of the tick rounding: a price within 1e-9 ticks of a multiple is on it.
TICK_EPS = 1e-9


def round_to_tick(price: float, table: int, buy: bool) -> float:
    """``price`` rounded to its tick against the trader: up for a buy, down for a sell.

    A price below one tick (only on back-adjusted prices far below any real KRX quote)
    is left as it is, for buys and sells alike: rounding it would move it by up to its
    own size."""
    tick = tick_size(price, table)
    x = price / tick
    if x < 1.0 - TICK_EPS:
        return price
    return float((math.ceil(x - TICK_EPS) if buy else math.floor(x + TICK_EPS)) * tick)


def coverage_warning(first: pd.Timestamp) -> str | None:
    """A message when data start before the tables are checked, else ``None``."""
    if _naive(pd.DatetimeIndex([first]))[0] < pd.Timestamp(COVERED_FROM):
        return (
            f"KRX rules: the data start on {pd.Timestamp(first).date()}, before {COVERED_FROM}; "
            "earlier dates use the first row of each table (sell tax 0.30 %, price limit "
            "+-15 % from 1998-12-07), which stockgym has not checked against the law of "
            "those years"
        )
    return None
