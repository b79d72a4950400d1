"""The PNG plots of a backtest (matplotlib's Agg canvas: no pyplot, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from stockgym.backtest.metrics import drawdown
from stockgym.backtest.runner import BacktestResult


def new_figure(width: float = 9.0, height: float = 4.5, rows: int = 1):
    """A matplotlib Figure on an Agg canvas (no pyplot, no display) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def plot_equity(result: BacktestResult, path: str | Path) -> None:
    """Portfolio value against the benchmark's."""
    fig, (ax,) = new_figure()
    rec = result.record
    ax.plot(rec.index, rec["value"], color="C0", lw=1.2, label=result.policy)
    if "benchmark" in rec:
        ax.plot(rec.index, rec["benchmark"], color="0.4", lw=1.0, ls="--", label="benchmark")
    ax.set_ylabel("portfolio value")
    ax.set_title(f"{result.policy} on {', '.join(result.symbols)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)


def plot_drawdown(result: BacktestResult, path: str | Path) -> None:
    """Drawdown from the running peak, strategy and benchmark."""
    fig, (ax,) = new_figure(height=3.5)
    rec = result.record
    dd = np.concatenate([[0.0], drawdown(result.returns.to_numpy())]) * 100
    ax.fill_between(rec.index, dd, 0.0, color="C3", alpha=0.35, label=result.policy)
    if "benchmark" in rec:
        bench = rec["benchmark"].to_numpy()
        ax.plot(
            rec.index,
            (bench / np.maximum.accumulate(bench) - 1) * 100,
            color="0.4",
            lw=0.9,
            ls="--",
            label="benchmark",
        )
    ax.set_ylabel("drawdown (%)")
    ax.set_title(f"{result.policy}: drawdown from the running peak")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def plot_trades(
    result: BacktestResult,
    path: str | Path | IO[bytes],
    max_symbols: int = 8,
    title: str | None = None,
) -> None:
    """A backtest's :func:`plot_fills` (``title`` default names the policy)."""
    title = title or f"{result.policy}: fills on the price chart"
    plot_fills(closes(result), result.trades, result.symbols, path, title, max_symbols)


def plot_fills(
    prices: pd.DataFrame,
    trades: pd.DataFrame,
    symbols: list[str],
    path: str | Path | IO[bytes],
    title: str,
    max_symbols: int = 8,
) -> None:
    """Each symbol's price (``prices``: a column per symbol, NaN where unknown) with the
    buy (^) and sell (v) fills of ``trades`` (columns ``date, symbol, side, filled,
    price``); ``path``: a file or a binary stream."""
    shown = symbols[:max_symbols]
    fig, axes = new_figure(height=2.6 * len(shown) + 0.6, rows=len(shown))
    filled = trades[trades["filled"] != 0]
    for ax, sym in zip(axes, shown, strict=True):
        ax.plot(prices.index, prices[sym], color="0.2", lw=0.9)
        mine = filled[filled["symbol"] == sym]
        for side, marker, color in (("buy", "^", "g"), ("sell", "v", "r")):
            part = mine[mine["side"] == side]
            ax.scatter(
                part["date"],
                part["price"],
                marker=marker,
                color=color,
                s=28,
                zorder=3,
                label=f"{side} ({len(part)})",
            )
        ax.set_ylabel(sym)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    more = f" (first {max_symbols} symbols)" if len(symbols) > max_symbols else ""
    axes[0].set_title(title + more)
    fig.tight_layout()
    fig.savefig(path, format="png")


def closes(result: BacktestResult) -> pd.DataFrame:
    """A backtest's closes per symbol: those it kept, else recovered from its held
    positions (:func:`held_price`; gaps while flat)."""
    if result.closes is not None:
        return result.closes
    rec = result.record
    value = rec["value"].to_numpy()
    out = {
        s: held_price(rec[f"weight_{s}"].to_numpy() * value, rec[f"position_{s}"].to_numpy())
        for s in result.symbols
    }
    return pd.DataFrame(out, index=rec.index)


def held_price(market_value: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The price of a held position, ``market_value / position``; NaN while flat."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(position != 0, market_value / position, np.nan)
