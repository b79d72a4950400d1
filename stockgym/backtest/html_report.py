"""``report.html``: one self-contained page (images embedded as base64 PNG, no external
files or scripts) per backtest, comparison and evaluation.

A backtest's page holds the metrics table beside the benchmark's, the orders not filled in
full by status, the tax paid by year, equity against the benchmark, drawdowns with a
table of the worst ones, a monthly-returns heatmap, the rolling Sharpe ratio and the
trades on the price; every figure's title names the policy.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.formatting import fmt_value
from stockgym.backtest.plots import new_figure, plot_trades
from stockgym.backtest.risk import RELATIVE_KEYS, RISK_KEYS
from stockgym.backtest.runner import BacktestResult

ROLLING_DAYS = 63  # a quarter of trading days for the rolling Sharpe ratio
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
       "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,"
       "th:first-child{text-align:left}img{max-width:100%}")  # fmt: skip


def figure_tag(fig: Any) -> str:
    """An ``<img>`` holding ``fig`` as an embedded PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}">'


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A whole HTML page: a title and ``(heading, html)`` sections."""
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n"
            f"{body}</body></html>\n")  # fmt: skip


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(escape=True, border=0, na_rep="n/a")


def metrics_html(metrics: dict[str, Any]) -> str:
    """Every metric of the policy beside the benchmark's."""
    bench = metrics.get("benchmark") or {}
    keys = [k for k in metrics if k != "benchmark" and not isinstance(metrics[k], dict)]
    rows = {k: [_fmt(k, metrics.get(k)), _fmt(k, bench.get(k)) if bench else ""] for k in keys}
    return table_html(pd.DataFrame.from_dict(rows, orient="index",
                                             columns=["policy", "benchmark"]))  # fmt: skip


def _fmt(key: str, value: Any) -> str:
    if key in RISK_KEYS or key in RELATIVE_KEYS:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.2%}" if key in ("var_95", "cvar_95", "alpha") else f"{value:.3f}"
    return fmt_value(key, value)


def unfilled_html(table: dict[str, dict[str, Any]]) -> str:
    """The unfilled-orders table (``metrics["unfilled_orders"]``: status -> orders,
    shares, value; value ``n/a`` where the orders were refused at no price)."""
    if not table:
        return "<p>Every order filled in full.</p>"
    rows = {
        status: [int(r["orders"]), f"{r['shares']:,.4g}", _money(r.get("value"))]
        for status, r in table.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["orders", "shares", "value"])
    frame.index.name = "status"
    return table_html(frame)


def tax_html(table: dict[str, dict[str, Any]]) -> str:
    """The tax-by-year table (``metrics["tax_by_year"]``: year -> sell value, tax, rate)."""
    if not table:
        return "<p>No orders.</p>"
    rows = {
        year: [_money(r.get("sell_value")), _money(r.get("tax")), _rate(r.get("rate"))]
        for year, r in table.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["sell value", "tax", "rate"])
    frame.index.name = "year"
    return table_html(frame)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _money(value: Any) -> str:
    return f"{value:,.2f}" if _finite(value) else "n/a"


def _rate(value: Any) -> str:
    return f"{value:.4%}" if _finite(value) else "n/a"


def drawdown_table(values: pd.Series, top: int = 5) -> pd.DataFrame:
    """The ``top`` worst drawdowns: peak, trough and recovery dates (``None`` if not
    recovered), depth and length in trading days."""
    v = values.to_numpy(np.float64)
    peak = np.maximum.accumulate(v)
    dd = v / peak - 1.0
    rows, t, n = [], 0, len(v)
    while t < n:
        if dd[t] < 0:
            start = t - 1
            end = t
            while end < n and dd[end] < 0:
                end += 1
            trough = start + 1 + int(np.argmin(dd[start + 1 : end]))
            rows.append({
                "peak": values.index[start].date(), "trough": values.index[trough].date(),
                "recovery": values.index[end].date() if end < n else None,
                "depth": float(dd[trough]), "days": (end if end < n else n - 1) - start,
            })  # fmt: skip
            t = end
        else:
            t += 1
    frame = pd.DataFrame(rows, columns=["peak", "trough", "recovery", "depth", "days"])
    frame = frame.sort_values("depth").head(top).reset_index(drop=True)
    frame["depth"] = frame["depth"].map(lambda x: f"{x:.2%}")
    return frame


def monthly_returns(values: pd.Series) -> pd.DataFrame:
    """Compounded returns by year (rows) and month (columns)."""
    month_end = values.resample("ME").last()
    start = pd.Series([values.iloc[0]], index=[values.index[0] - pd.offsets.MonthEnd(1)])
    rets = pd.concat([start, month_end]).pct_change().iloc[1:]
    frame = pd.DataFrame({"year": rets.index.year, "month": rets.index.month, "r": rets.values})
    return frame.pivot(index="year", columns="month", values="r")


def _heatmap(table: pd.DataFrame, policy: str) -> Any:
    fig, (ax,) = new_figure(width=9, height=0.45 * len(table) + 1.4)
    data = table.to_numpy(np.float64)
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    im = ax.imshow(data, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(table.columns)), [str(m) for m in table.columns])
    ax.set_yticks(range(len(table.index)), [str(y) for y in table.index])
    for (i, j), val in np.ndenumerate(data):
        if np.isfinite(val):
            ax.text(j, i, f"{val:.1%}", ha="center", va="center", fontsize=7)
    ax.set_title(f"{policy}: monthly returns")
    fig.colorbar(im, ax=ax, format=lambda x, _: f"{x:.0%}")
    fig.tight_layout()
    return fig


def backtest_html(result: BacktestResult, metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """The ``report.html`` of one backtest."""
    policy = config.get("strategy", {}).get("description") or result.policy
    rec = result.record
    sections = [("Metrics", metrics_html(metrics))]
    if "unfilled_orders" in metrics:
        sections.append(("Unfilled orders", unfilled_html(metrics["unfilled_orders"])))
    if "tax_by_year" in metrics:
        sections.append(("Tax by year", tax_html(metrics["tax_by_year"])))
    fig, (ax,) = new_figure()
    ax.plot(rec.index, rec["value"], color="C0", lw=1.2, label=policy)
    if "benchmark" in rec:
        ax.plot(rec.index, rec["benchmark"], color="0.4", lw=1.0, ls="--",
                label="buy-and-hold (benchmark)")  # fmt: skip
    ax.set_title(f"{policy}: portfolio value against buy-and-hold")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    sections.append(("Equity", figure_tag(fig)))
    fig, (ax,) = new_figure(height=3.2)
    v = rec["value"]
    ax.fill_between(rec.index, (v / v.cummax() - 1) * 100, 0, color="C3", alpha=0.35, label=policy)
    if "benchmark" in rec:
        b = rec["benchmark"]
        ax.plot(rec.index, (b / b.cummax() - 1) * 100, color="0.4", ls="--", lw=0.9,
                label="buy-and-hold")  # fmt: skip
    ax.set_title(f"{policy}: drawdown from the running peak (%)")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    sections.append(("Drawdowns", figure_tag(fig) + table_html(drawdown_table(v))))
    sections.append(("Monthly returns", figure_tag(_heatmap(monthly_returns(v), policy))))
    r = result.returns
    if len(r) > ROLLING_DAYS:
        roll = r.rolling(ROLLING_DAYS)
        sharpe = roll.mean() / roll.std() * math.sqrt(252)
        fig, (ax,) = new_figure(height=3.2)
        ax.plot(sharpe.index, sharpe, color="C0", lw=1.0, label=policy)
        if result.benchmark is not None:
            br = result.benchmark.returns.rolling(ROLLING_DAYS)
            ax.plot(sharpe.index, br.mean() / br.std() * math.sqrt(252), color="0.4",
                    ls="--", lw=0.9, label="buy-and-hold")  # fmt: skip
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{policy}: rolling Sharpe ratio ({ROLLING_DAYS} days, annualised)")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        sections.append(("Rolling Sharpe ratio", figure_tag(fig)))
    buf = io.BytesIO()
    plot_trades(result, buf, title=f"{policy}: fills on the price")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    sections.append(("Trades", f'<img src="data:image/png;base64,{data}">'))
    bt = config.get("backtest", {})
    title = f"{policy} on {', '.join(result.symbols)}, {bt.get('first')}..{bt.get('last')}"
    if result.terminated:
        sections.insert(0, ("Stopped early", "<p>The portfolio fell below the ruin floor: "
                            "the backtest ended there.</p>"))  # fmt: skip
    return page(title, sections)


def images_html(title: str, tables: list[tuple[str, str]], images: list[Path]) -> str:
    """A page of ready tables (HTML) and PNG files (embedded) - for compare/evaluate."""
    sections = list(tables)
    for path in images:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        sections.append((Path(path).stem.replace("_", " "),
                         f'<img src="data:image/png;base64,{data}">'))  # fmt: skip
    return page(title, sections)
