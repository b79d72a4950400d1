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
    """Each symbol's price over the period with buy (^) and sell (v) fills (``path``: a
    file or a binary stream; ``title`` default names the policy)."""
    symbols = result.symbols[:max_symbols]
    fig, axes = new_figure(height=2.6 * len(symbols) + 0.6, rows=len(symbols))
    prices = _closes(result)
    filled = result.trades[result.trades["filled"] != 0]
    for ax, sym in zip(axes, symbols, strict=True):
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
    more = f" (first {max_symbols} symbols)" if len(result.symbols) > max_symbols else ""
    axes[0].set_title((title or f"{result.policy}: fills on the price chart") + more)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _closes(result: BacktestResult) -> pd.DataFrame:
    if result.closes is not None:
        return result.closes
    # no closes kept: recover them from held positions (gaps while flat)
    rec = result.record
    out = {}
    for s in result.symbols:
        q = rec[f"position_{s}"].to_numpy()
        w = rec[f"weight_{s}"].to_numpy() * rec["value"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out[s] = np.where(q != 0, w / q, np.nan)
    return pd.DataFrame(out, index=rec.index)
