"""Performance metrics of a backtest: one module, empyrical-reloaded's conventions.

Conventions (the same as empyrical-reloaded, and tested against it):

* Returns are **daily simple returns** of the portfolio value, ``r_t = V_t / V_{t-1} - 1``,
  one per step of the backtest (the first value is the initial cash at the close of the
  first decision date).
* A year has ``periods = 252`` trading days.
* Standard deviations are **sample** standard deviations (``ddof=1``).
* ``risk_free`` is an **annual** rate (default 0), turned into a daily rate
  ``(1 + risk_free) ** (1 / periods) - 1`` and subtracted from every daily return for
  the Sharpe and Sortino ratios (empyrical's ``risk_free`` / ``required_return`` take
  that daily rate).
* ``max_drawdown`` is a negative number (-0.25 is a 25 % fall from the peak); the
  initial value counts as a peak.
* Undefined ratios (no variation, no drawdown, fewer than two returns) are ``nan`` in
  Python and ``null`` in ``metrics.json``; no downside at all gives a Sortino of ``inf``
  (also ``null`` in JSON) as empyrical does.

Trade metrics: a *trade* is one filled order (one symbol, one step). A *closed trade*
is an order that reduces an open position; its shares are matched **FIFO per symbol**
against the lots that opened the position (buys for a long, short sales for a short),
and its P&L is the cash it received minus the cash the matched lots cost, every
commission, tax and slippage included. ``win_rate`` = closed trades with P&L > 0 /
closed trades (``nan`` when nothing was closed); positions still open at the end are
not counted.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

PERIODS_PER_YEAR = 252

#: Keys of :func:`compute_metrics` (and of ``metrics.json`` and its ``benchmark`` object).
METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar",
    "turnover",
    "trades",
    "closed_trades",
    "win_rate",
    "exposure",
    "time_in_market",
    "costs",
    "costs_fraction",
    "final_value",
    "days",
)

_EPS = 1e-9


def _arr(returns) -> np.ndarray:
    return np.asarray(returns, dtype=np.float64).reshape(-1)


def returns_from_values(values) -> np.ndarray:
    """Daily simple returns ``V_t / V_{t-1} - 1`` of a value series (one fewer entry)."""
    v = _arr(values)
    return v[1:] / v[:-1] - 1.0


def daily_risk_free(risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float:
    """The daily rate compounding to the annual ``risk_free`` over ``periods`` days."""
    return (1.0 + risk_free) ** (1.0 / periods) - 1.0


def total_return(returns) -> float:
    """Compounded return over the whole period: ``prod(1 + r) - 1``."""
    r = _arr(returns)
    return float(np.prod(1.0 + r) - 1.0) if len(r) else math.nan


def cagr(returns, periods: int = PERIODS_PER_YEAR) -> float:
    """Compound annual growth rate: ``(1 + total_return) ** (periods / n) - 1``."""
    r = _arr(returns)
    if not len(r):
        return math.nan
    growth = 1.0 + total_return(r)
    return float(growth ** (periods / len(r)) - 1.0) if growth >= 0 else math.nan


def volatility(returns, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualised volatility: sample std of daily returns times ``sqrt(periods)``."""
    r = _arr(returns)
    return float(np.std(r, ddof=1) * math.sqrt(periods)) if len(r) >= 2 else math.nan


def sharpe(returns, risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualised Sharpe ratio: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods)``."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    adj = r - daily_risk_free(risk_free, periods)
    std = 0.0 if adj.max() == adj.min() else np.std(adj, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(adj.mean(), std) * math.sqrt(periods))


def downside_risk(returns, risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualised downside deviation: ``sqrt(mean(min(r - rf, 0) ** 2) * periods)``
    (the mean runs over every day, as empyrical's)."""
    r = _arr(returns)
    if not len(r):
        return math.nan
    down = np.minimum(r - daily_risk_free(risk_free, periods), 0.0)
    return float(math.sqrt(np.mean(down**2)) * math.sqrt(periods))


def sortino(returns, risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float:
    """Annualised Sortino ratio: ``mean(r - rf) * periods / downside_risk``."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    mean = (r - daily_risk_free(risk_free, periods)).mean() * periods
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(mean, downside_risk(r, risk_free, periods)))


def drawdown(returns) -> np.ndarray:
    """Drawdown after each return: ``W_t / max(W_0..W_t) - 1`` with ``W_0 = 1``."""
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + _arr(returns))])
    return (wealth / np.maximum.accumulate(wealth) - 1.0)[1:]


def max_drawdown(returns) -> float:
    """The deepest drawdown (<= 0; 0 when the value never fell below a peak)."""
    r = _arr(returns)
    return float(min(drawdown(r).min(), 0.0)) if len(r) else math.nan


def max_drawdown_duration(returns) -> int:
    """Longest stretch, in trading days, spent below a previous peak (until the peak
    is regained, or to the end of the period if it never is)."""
    under = drawdown(returns) < 0.0
    longest = run = 0
    for below in under:
        run = run + 1 if below else 0
        longest = max(longest, run)
    return int(longest)


def calmar(returns, periods: int = PERIODS_PER_YEAR) -> float:
    """``cagr / |max_drawdown|``; ``nan`` when there was no drawdown."""
    mdd = max_drawdown(returns)
    if not mdd < 0:
        return math.nan
    value = cagr(returns, periods) / abs(mdd)
    return value if math.isfinite(value) else math.nan


# ----------------------------------------------------------------- trades
def closed_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """FIFO round trips per symbol (see the module docstring).

    ``trades``: one row per order with ``date, symbol, filled`` (signed shares),
    ``value`` (shares x fill price), ``commission``, ``tax``. Returns one row per order
    that closed shares: ``order`` (its row label in ``trades``), ``date``, ``symbol``,
    ``side`` (``"long"``/``"short"``: the position it closed), ``quantity`` (shares
    closed), ``entry_date`` (of the oldest lot matched), ``pnl`` (net of all costs),
    ``return`` (pnl / cost of the matched lots).
    """
    cols = ["order", "date", "symbol", "side", "quantity", "entry_date", "pnl", "return"]
    lots: dict[str, deque] = {}
    rows = []
    for label, t in _filled(trades).iterrows():
        qty = float(t["filled"])
        cash = float(t["value"]) + (float(t["commission"]) + float(t["tax"])) * (
            1.0 if qty > 0 else -1.0
        )
        per_share = cash / abs(qty)  # cash paid per share bought / received per share sold
        book = lots.setdefault(str(t["symbol"]), deque())
        row = _close_lots(book, qty, per_share, t["date"])
        if row is not None:
            rows.append({"order": label, "date": t["date"], "symbol": t["symbol"], **row})
    return pd.DataFrame(rows, columns=cols)


def _filled(trades: pd.DataFrame) -> pd.DataFrame:
    if trades is None or len(trades) == 0:
        return pd.DataFrame(columns=["date", "symbol", "filled", "value", "commission", "tax"])
    return trades[trades["filled"].abs() > 0]


def _close_lots(book: deque, qty: float, per_share: float, date) -> dict | None:
    """Match an order of signed ``qty`` against ``book`` (FIFO lots [qty, price, date]);
    open a lot with any remainder. Returns the closed-trade fields or None."""
    sign = 1.0 if qty > 0 else -1.0
    remaining = abs(qty)
    closed = pnl = basis = 0.0
    entry = None
    while remaining > _EPS and book and book[0][0] * sign < 0:
        lot = book[0]
        m = min(abs(lot[0]), remaining)
        entry = lot[2] if entry is None else entry
        # A long lot (bought at lot[1]) closed by a sale at per_share, or a short lot
        # (sold at lot[1]) covered by a purchase at per_share.
        pnl += m * (per_share - lot[1]) if lot[0] > 0 else m * (lot[1] - per_share)
        basis += m * lot[1]
        closed += m
        remaining -= m
        lot[0] -= m * (1.0 if lot[0] > 0 else -1.0)
        if abs(lot[0]) <= _EPS:
            book.popleft()
    if remaining > _EPS:
        book.append([sign * remaining, per_share, date])
    if closed == 0.0:
        return None
    side = "long" if sign < 0 else "short"
    return {
        "side": side,
        "quantity": closed,
        "entry_date": entry,
        "pnl": pnl,
        "return": pnl / basis if basis else math.nan,
    }


def win_rate(trades: pd.DataFrame) -> float:
    """Share of closed trades (FIFO per symbol) with P&L > 0; ``nan`` if none closed."""
    closed = closed_trades(trades)
    return float((closed["pnl"] > 0).mean()) if len(closed) else math.nan


# ----------------------------------------------------------------- record
def turnover(record: pd.DataFrame) -> float:
    """Two-way turnover over the period: ``sum_t traded_value_t / V_{t-1}`` (buying the
    whole portfolio once is 1.0; selling it again makes 2.0). Not annualised."""
    v = record["value"].to_numpy(np.float64)
    traded = record["traded_value"].to_numpy(np.float64)[1:]
    return float(np.sum(traded / v[:-1])) if len(v) > 1 else math.nan


def exposure(record: pd.DataFrame) -> float:
    """Average gross exposure: mean over the period's closes (after each step) of
    ``sum_i |shares_i * close_i| / V`` (1.0 = fully invested every day)."""
    e = record["exposure"].to_numpy(np.float64)[1:]
    return float(e.mean()) if len(e) else math.nan


def time_in_market(record: pd.DataFrame) -> float:
    """Share of the period's closes with any position open."""
    e = record["exposure"].to_numpy(np.float64)[1:]
    return float((e > 0).mean()) if len(e) else math.nan


def compute_metrics(
    record: pd.DataFrame,
    trades: pd.DataFrame | None = None,
    *,
    risk_free: float = 0.0,
    periods: int = PERIODS_PER_YEAR,
) -> dict[str, float]:
    """Every metric of :data:`METRIC_KEYS` for one backtest.

    ``record``: the daily record of :func:`stockgym.backtest.run_policy` (columns
    ``value``, ``traded_value``, ``exposure``, ``cost``; first row = the start, before
    any trade). ``trades``: its order list (for ``trades``, ``closed_trades`` and
    ``win_rate``). ``costs`` is in currency (commission + tax + slippage + borrow),
    ``costs_fraction`` the same over the initial value; ``days`` counts returns.
    """
    values = record["value"].to_numpy(np.float64)
    r = returns_from_values(values)
    trades = trades if trades is not None else pd.DataFrame(columns=["filled"])
    filled = _filled(trades)
    closed = closed_trades(trades)
    costs = float(record["cost"].sum())
    return {
        "total_return": total_return(r),
        "cagr": cagr(r, periods),
        "volatility": volatility(r, periods),
        "sharpe": sharpe(r, risk_free, periods),
        "sortino": sortino(r, risk_free, periods),
        "max_drawdown": max_drawdown(r),
        "max_drawdown_duration": max_drawdown_duration(r),
        "calmar": calmar(r, periods),
        "turnover": turnover(record),
        "trades": int(len(filled)),
        "closed_trades": int(len(closed)),
        "win_rate": float((closed["pnl"] > 0).mean()) if len(closed) else math.nan,
        "exposure": exposure(record),
        "time_in_market": time_in_market(record),
        "costs": costs,
        "costs_fraction": costs / float(values[0]),
        "final_value": float(values[-1]),
        "days": int(len(r)),
    }


def json_safe(metrics: dict) -> dict:
    """The metrics with ``nan`` / ``inf`` as ``None`` (valid JSON) and numpy scalars
    as Python numbers; nested dicts (the benchmark) too."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out[key] = json_safe(value)
        elif isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value) if math.isfinite(value) else None
        else:
            out[key] = value
    return out
