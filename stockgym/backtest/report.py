"""Backtest outputs: files of an output directory, PNG plots and terminal tables.

An output directory is written into a temporary sibling directory and renamed into
place at the end (:func:`atomic_dir`), so a failed run leaves nothing behind.
matplotlib is imported only when a plot is drawn, with its Agg canvas (no display, no
global backend change).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.formatting import (
    format_costs,
    format_rules,
    format_tax_by_year,
    format_unfilled,
    metrics_table,
)
from stockgym.backtest.html_report import backtest_html
from stockgym.backtest.metrics import closed_trades, drawdown, json_safe
from stockgym.backtest.plots import plot_drawdown, plot_equity, plot_trades
from stockgym.backtest.runner import BacktestResult
from stockgym.core import current_umask

#: Files a backtest output directory holds.
BACKTEST_FILES = (
    "metrics.json",
    "equity.csv",
    "trades.csv",
    "config.json",
    "equity.png",
    "drawdown.png",
    "trades.png",
    "report.html",
)


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
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; outputs follow the umask
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


#: The order statuses, in the order the unfilled-orders table lists them.
STATUSES = (
    "filled",
    "scaled",
    "capped",
    "limit_locked",
    "not_tradable",
    "uneconomic",
    "borrow_call",
)


def unfilled_orders(trades: pd.DataFrame) -> pd.DataFrame:
    """Orders not filled in full (``|filled| < |requested|``), by ``status``.

    Columns: ``orders`` (how many), ``shares`` (sum of ``|requested| - |filled|``) and
    ``value`` (sum of those shares times the order's ``price``, over the orders with a
    price; refused orders carry price 0 and are left out of it; ``nan`` when none has
    one). One row per status present, in :data:`STATUSES` order (others after)."""
    req = trades["requested"].to_numpy(np.float64)
    got = trades["filled"].to_numpy(np.float64)
    short = np.abs(req) - np.abs(got)
    part = trades.loc[short > 0].assign(shares=short[short > 0])
    price = part["price"].to_numpy(np.float64)
    part = part.assign(priced=price > 0, value=np.where(price > 0, part["shares"] * price, 0.0))
    table = part.groupby("status", sort=False).agg(
        orders=("shares", "size"),
        shares=("shares", "sum"),
        value=("value", "sum"),
        priced=("priced", "sum"),
    )
    table.loc[table["priced"] == 0, "value"] = np.nan
    order = [s for s in STATUSES if s in table.index]
    order += sorted(s for s in table.index if s not in STATUSES)
    table = table.loc[order, ["orders", "shares", "value"]]
    table["orders"] = table["orders"].astype(np.int64)
    table.index.name = "status"
    return table


def tax_by_year(trades: pd.DataFrame) -> pd.DataFrame:
    """Sell-side tax paid per calendar year of the orders' dates.

    Columns: ``sell_value`` (sum of the filled sells' ``value``), ``tax`` (sum of every
    order's ``tax``) and ``rate = tax / sell_value`` (``nan`` for a year without
    sales). One row per year with an order, ascending, indexed by ``year``."""
    years = pd.to_datetime(trades["date"]).dt.year.rename("year")
    sold = (trades["side"] == "sell") & (trades["filled"] != 0)
    frame = pd.DataFrame(
        {
            "sell_value": np.where(sold, trades["value"].to_numpy(np.float64), 0.0),
            "tax": trades["tax"].to_numpy(np.float64),
        },
        index=trades.index,
    )
    table = frame.groupby(years.to_numpy(), sort=True).sum()
    table.index = table.index.astype(np.int64).rename("year")
    with np.errstate(divide="ignore", invalid="ignore"):
        table["rate"] = np.where(
            table["sell_value"] > 0, table["tax"] / table["sell_value"], np.nan
        )
    return table


def table_dict(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A table as ``{row label (str): {column: value}}`` for ``metrics.json``."""
    return {str(k): row for k, row in table.to_dict(orient="index").items()}


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
    PNGs and ``report.html`` into ``out_dir``; returns the metrics (with ``benchmark``,
    and ``stopped_by_ruin``: whether the value fell below the env's ruin floor,
    which ends the backtest early; ``unfilled_orders`` and ``tax_by_year``: the tables
    of :func:`unfilled_orders` and :func:`tax_by_year` as dicts keyed by status / year)."""
    out_dir = Path(out_dir)
    metrics = result.metrics(risk_free)
    metrics["stopped_by_ruin"] = bool(result.terminated)
    metrics["unfilled_orders"] = table_dict(unfilled_orders(result.trades))
    metrics["tax_by_year"] = table_dict(tax_by_year(result.trades))
    write_json(out_dir / "metrics.json", json_safe(metrics))
    equity_frame(result).to_csv(out_dir / "equity.csv", date_format="%Y-%m-%d")
    trades_frame(result).to_csv(out_dir / "trades.csv", index=False)
    write_json(out_dir / "config.json", config)
    if plots:
        plot_equity(result, out_dir / "equity.png")
        plot_drawdown(result, out_dir / "drawdown.png")
        plot_trades(result, out_dir / "trades.png")
        (out_dir / "report.html").write_text(backtest_html(result, metrics, config))
    return metrics


# ---------------------------------------------------------------- text
def format_report(config: dict[str, Any], metrics: dict[str, Any], out: Path) -> str:
    """The report a backtest prints: what ran on what, the period, costs, benchmark, the
    rules, unfilled orders, tax by year, the metrics table and the files written to ``out``
    (``rules``, ``unfilled_orders`` and ``tax_by_year`` only where the config / metrics
    have them: runs written before them do not)."""
    env, bt, b = config["env"], config["backtest"], config["benchmark"]
    rules = env.get("rules")
    fill = "next open" if env["fill"] == "open" else "same close"
    plots = (
        " equity.png drawdown.png trades.png report.html"
        if (Path(out) / "equity.png").exists()
        else ""
    )
    ruin = []
    if metrics.get("stopped_by_ruin"):
        floor = env.get("ruin_floor")
        at = f" ({floor:,.2f})" if isinstance(floor, (int, float)) else ""
        ruin = [
            f"STOPPED    the portfolio value fell below the ruin floor{at} on {bt['last']}; "
            "the backtest ended there (metrics cover the period up to that day)",
        ]
    return "\n".join([
        *ruin,
        f"backtest   {config['strategy']['description']} on {', '.join(env['symbols'])} "
        f"[source={config['data']['source']}]",
        f"period     {bt['first']} .. {bt['last']} ({bt['days']} trading days; decisions "
        f"at the close, fills at the {fill})",
        f"costs      market={config['market']}: {format_costs(env['costs'], rules)}",
        *([f"rules      {format_rules(rules)}"] if rules is not None else []),
        *format_unfilled(metrics.get("unfilled_orders")),
        *format_tax_by_year(metrics.get("tax_by_year")),
        f"benchmark  buy-and-hold {' '.join(b['symbols'])} over the same dates, same costs",
        "",
        metrics_table(metrics),
        "",
        f"wrote {out}/ (metrics.json equity.csv trades.csv config.json{plots})",
    ])  # fmt: skip
