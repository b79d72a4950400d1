"""Backtest outputs: files of an output directory, PNG plots and terminal tables.

An output directory is written into a temporary sibling directory and renamed into
place at the end (:func:`atomic_dir`), so a failed run leaves nothing behind.
matplotlib is imported only when a plot is drawn, with its Agg canvas (no display, no
global backend change).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.metrics import METRIC_KEYS, closed_trades, drawdown, json_safe
from stockgym.backtest.runner import BacktestResult

#: Files a backtest output directory holds.
BACKTEST_FILES = (
    "metrics.json", "equity.csv", "trades.csv", "config.json",
    "equity.png", "drawdown.png", "trades.png",
)

# How each metric is shown: pct, ratio, int, days, money, x (multiple).
_FORMATS = {
    "total_return": "pct", "cagr": "pct", "volatility": "pct", "sharpe": "ratio",
    "sortino": "ratio", "max_drawdown": "pct", "max_drawdown_duration": "days",
    "calmar": "ratio", "turnover": "x", "trades": "int", "closed_trades": "int",
    "win_rate": "pct", "exposure": "pct", "time_in_market": "pct", "costs": "money",
    "costs_fraction": "pct", "final_value": "money", "days": "int",
}


class OutputDirError(ValueError):
    """The output directory exists and is not empty (and overwriting was not asked)."""


# ---------------------------------------------------------------- atomic dir
def check_out_dir(out: str | Path, force: bool = False, flag: str = "--out") -> Path:
    """Refuse an ``out`` that is a file, or a non-empty directory unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{flag} {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputDirError(
            f"{flag} {out} already exists and is not empty; choose another directory "
            "or pass --force to replace it"
        )
    return out


@contextmanager
def atomic_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it becomes ``out``
    (replacing an existing one only with ``force``); on any error it is removed, and so
    are parent directories this call created."""
    out = check_out_dir(out, force)
    made = [p for p in reversed(out.absolute().parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _publish(tmp: Path, out: Path, force: bool) -> None:
    check_out_dir(out, force)
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- frames
def equity_frame(result: BacktestResult) -> pd.DataFrame:
    """``equity.csv``: date, value, benchmark, position (or ``position_<SYMBOL>`` for
    several symbols: shares), cash, exposure, cost, drawdown."""
    rec = result.record
    out = pd.DataFrame(index=rec.index)
    out["value"] = rec["value"]
    out["benchmark"] = rec["benchmark"] if "benchmark" in rec else np.nan
    if len(result.symbols) == 1:
        out["position"] = rec[f"position_{result.symbols[0]}"]
    else:
        for s in result.symbols:
            out[f"position_{s}"] = rec[f"position_{s}"]
    out["cash"] = rec["cash"]
    out["exposure"] = rec["exposure"]
    out["cost"] = rec["cost"]
    out["drawdown"] = np.concatenate([[0.0], drawdown(result.returns.to_numpy())])
    out.index.name = "date"
    return out


def trades_frame(result: BacktestResult) -> pd.DataFrame:
    """``trades.csv``: every order (filled or not, see ``status``) plus
    ``realized_pnl``: the FIFO P&L of the shares it closed (empty for opening orders)."""
    trades = result.trades.copy()
    closed = closed_trades(result.trades)
    trades["realized_pnl"] = np.nan
    if len(closed):
        trades.loc[closed["order"].to_numpy(), "realized_pnl"] = closed["pnl"].to_numpy()
    trades["date"] = pd.to_datetime(trades["date"]).dt.strftime("%Y-%m-%d")
    return trades


# ---------------------------------------------------------------- writing
def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_backtest(
    result: BacktestResult,
    out_dir: str | Path,
    config: dict[str, Any],
    *,
    risk_free: float = 0.0,
    plots: bool = True,
) -> dict[str, Any]:
    """Write metrics.json, equity.csv, trades.csv, config.json and (``plots``) the
    PNGs into ``out_dir``; returns the metrics (with ``benchmark``)."""
    out_dir = Path(out_dir)
    metrics = result.metrics(risk_free)
    write_json(out_dir / "metrics.json", json_safe(metrics))
    equity_frame(result).to_csv(out_dir / "equity.csv", date_format="%Y-%m-%d")
    trades_frame(result).to_csv(out_dir / "trades.csv", index=False)
    write_json(out_dir / "config.json", config)
    if plots:
        plot_equity(result, out_dir / "equity.png")
        plot_drawdown(result, out_dir / "drawdown.png")
        plot_trades(result, out_dir / "trades.png")
    return metrics


# ---------------------------------------------------------------- plots
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
        ax.plot(rec.index, (bench / np.maximum.accumulate(bench) - 1) * 100, color="0.4",
                lw=0.9, ls="--", label="benchmark")
    ax.set_ylabel("drawdown (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def plot_trades(result: BacktestResult, path: str | Path, max_symbols: int = 8) -> None:
    """Each symbol's price over the period with buy (^) and sell (v) fills."""
    symbols = result.symbols[:max_symbols]
    fig, axes = new_figure(height=2.6 * len(symbols) + 0.6, rows=len(symbols))
    prices = _closes(result)
    filled = result.trades[result.trades["filled"] != 0]
    for ax, sym in zip(axes, symbols, strict=True):
        ax.plot(prices.index, prices[sym], color="0.2", lw=0.9)
        mine = filled[filled["symbol"] == sym]
        for side, marker, color in (("buy", "^", "g"), ("sell", "v", "r")):
            part = mine[mine["side"] == side]
            ax.scatter(part["date"], part["price"], marker=marker, color=color, s=28,
                       zorder=3, label=f"{side} ({len(part)})")
        ax.set_ylabel(sym)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_title("fills on the price chart" + (
        f" (first {max_symbols} symbols)" if len(result.symbols) > max_symbols else ""))
    fig.tight_layout()
    fig.savefig(path)


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


# ---------------------------------------------------------------- text
def fmt_value(key: str, value: Any) -> str:
    """A metric as shown in tables (``n/a`` for undefined values)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    kind = _FORMATS.get(key, "ratio")
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "days":
        return f"{int(value):d} d"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "x":
        return f"{value:.2f}x"
    return f"{value:.3f}"


def format_costs(costs: dict[str, float]) -> str:
    """One line naming every cost the run used."""
    return (
        f"commission {costs['commission'] * 100:.4f}% (both sides), "
        f"sell tax {costs['sell_tax'] * 100:.4f}%, slippage {costs['slippage_bps']:g} bps, "
        f"min commission {costs['min_commission']:g}, borrow {costs['borrow_rate'] * 100:g}%/yr"
    )


def metrics_table(metrics: dict[str, Any], keys: tuple[str, ...] = METRIC_KEYS) -> str:
    """Two columns, strategy and benchmark (when present), one row per metric."""
    bench = metrics.get("benchmark")
    head = f"{'metric':<24}{'strategy':>16}" + (f"{'benchmark':>16}" if bench else "")
    lines = [head, "-" * len(head)]
    for k in keys:
        line = f"{k:<24}{fmt_value(k, metrics.get(k)):>16}"
        if bench:
            line += f"{fmt_value(k, bench.get(k)):>16}"
        lines.append(line)
    return "\n".join(lines)


def format_report(config: dict[str, Any], metrics: dict[str, Any], out: Path) -> str:
    """The report a backtest prints: what ran on what, the period, costs, benchmark, the
    metrics table and the files written to ``out``."""
    env, bt, b = config["env"], config["backtest"], config["benchmark"]
    fill = "next open" if env["fill"] == "open" else "same close"
    plots = " equity.png drawdown.png trades.png" if (Path(out) / "equity.png").exists() else ""
    return "\n".join([
        f"backtest   {config['strategy']['description']} on {', '.join(env['symbols'])} "
        f"[source={config['data']['source']}]",
        f"period     {bt['first']} .. {bt['last']} ({bt['days']} trading days; decisions "
        f"at the close, fills at the {fill})",
        f"costs      market={config['market']}: {format_costs(env['costs'])}",
        f"benchmark  buy-and-hold {' '.join(b['symbols'])} over the same dates, same costs",
        "",
        metrics_table(metrics),
        "",
        f"wrote {out}/ (metrics.json equity.csv trades.csv config.json{plots})",
    ])  # fmt: skip
