"""``report.html``: one self-contained page (images embedded as base64 PNG, no external
files or scripts) per backtest, comparison and evaluation.

A backtest's page holds the metrics table beside the benchmark's, the orders not filled in
full by status, the tax paid by year, equity against the benchmark, drawdowns with a
table of the worst ones, a monthly-returns heatmap, the rolling Sharpe ratio and the
trades on the price; every figure's title names the policy. Those per-policy sections
are built from plain series by :func:`policy_sections`, which ``stockgym compare``
(:mod:`stockgym.backtest.compare`) and ``stockgym evaluate``
(:mod:`stockgym.experiment.evaluate_report`) reuse for each run / policy.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.formatting import fmt_value
from stockgym.backtest.plots import closes, new_figure, plot_fills
from stockgym.backtest.risk import RELATIVE_KEYS, RISK_KEYS
from stockgym.backtest.runner import BacktestResult

ROLLING_DAYS = 63  # a quarter of trading days for the rolling Sharpe ratio
NOT_RECOVERED = "not recovered"  # the drawdown table's recovery date of an open drawdown
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
       "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,"
       "th:first-child{text-align:left}img{max-width:100%}")  # fmt: skip


def figure_tag(fig: Any) -> str:
    """An ``<img>`` holding ``fig`` as an embedded PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return png_tag(buf.getvalue())


def png_tag(png: bytes) -> str:
    """An ``<img>`` holding PNG bytes as a base64 data URI (the page stays self-contained)."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


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
    rows = {
        k: [fmt_metric(k, metrics.get(k)), fmt_metric(k, bench.get(k)) if bench else ""]
        for k in keys
    }
    return table_html(pd.DataFrame.from_dict(rows, orient="index",
                                             columns=["policy", "benchmark"]))  # fmt: skip


def fmt_metric(key: str, value: Any) -> str:
    """A metric as shown in the pages (risk keys included; ``n/a`` when undefined)."""
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
    """The ``top`` worst drawdowns: peak, trough and recovery dates ("not recovered" when
    the series ends below the peak), depth ``V_trough / V_peak - 1`` and length in
    trading days (peak to recovery, or to the last day)."""
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
                "recovery": values.index[end].date() if end < n else NOT_RECOVERED,
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


# ------------------------------------------------------------ sections of one policy
# Each takes plain series (a value series indexed by date, an optional benchmark value
# series on the same dates) and the policy's label, which every figure title carries.
def equity_section(values: pd.Series, bench: pd.Series | None, policy: str,
                   bench_label: str = "buy-and-hold (benchmark)") -> str:  # fmt: skip
    """Portfolio value against the benchmark's."""
    fig, (ax,) = new_figure()
    ax.plot(values.index, values, color="C0", lw=1.2, label=policy)
    if bench is not None:
        ax.plot(bench.index, bench, color="0.4", lw=1.0, ls="--", label=bench_label)
    ax.set_title(f"{policy}: portfolio value against buy-and-hold")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_tag(fig)


def drawdown_section(values: pd.Series, bench: pd.Series | None, policy: str) -> str:
    """Drawdown ``V_t / max(V_0..V_t) - 1`` of the policy (and benchmark), and the table
    of the worst ones (:func:`drawdown_table`)."""
    fig, (ax,) = new_figure(height=3.2)
    dd = (values / values.cummax() - 1) * 100
    ax.fill_between(values.index, dd, 0, color="C3", alpha=0.35, label=policy)
    if bench is not None:
        ax.plot(bench.index, (bench / bench.cummax() - 1) * 100, color="0.4", ls="--", lw=0.9,
                label="buy-and-hold")  # fmt: skip
    ax.set_title(f"{policy}: drawdown from the running peak (%)")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_tag(fig) + table_html(drawdown_table(values))


def monthly_section(values: pd.Series, policy: str) -> str:
    """The monthly-returns heatmap (:func:`monthly_returns`)."""
    return figure_tag(_heatmap(monthly_returns(values), policy))


def rolling_sharpe_section(values: pd.Series, bench: pd.Series | None, policy: str) -> str:
    """Rolling Sharpe ratio of daily returns, ``mean / std * sqrt(252)`` over
    :data:`ROLLING_DAYS` days; a note when the series is too short."""
    r = values.pct_change().iloc[1:]
    if len(r) <= ROLLING_DAYS:
        return f"<p>{html.escape(policy)}: fewer than {ROLLING_DAYS + 1} days of returns.</p>"
    roll = r.rolling(ROLLING_DAYS)
    sharpe = roll.mean() / roll.std() * math.sqrt(252)
    fig, (ax,) = new_figure(height=3.2)
    ax.plot(sharpe.index, sharpe, color="C0", lw=1.0, label=policy)
    if bench is not None:
        br = bench.pct_change().iloc[1:].rolling(ROLLING_DAYS)
        ax.plot(sharpe.index, br.mean() / br.std() * math.sqrt(252), color="0.4",
                ls="--", lw=0.9, label="buy-and-hold")  # fmt: skip
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"{policy}: rolling Sharpe ratio ({ROLLING_DAYS} days, annualised)")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_tag(fig)


def trades_section(prices: pd.DataFrame | None, trades: pd.DataFrame, symbols: list[str],
                   policy: str) -> str:  # fmt: skip
    """Each symbol's price (``prices``: a column per symbol, NaN where unknown) with the
    buy and sell fills of ``trades`` (columns ``date, symbol, side, filled, price``), drawn
    by :func:`~stockgym.backtest.plots.plot_fills`."""
    trades = trades.assign(date=pd.to_datetime(trades["date"]))
    if prices is None:
        prices = pd.DataFrame(index=pd.DatetimeIndex(sorted(trades["date"].unique())),
                              columns=symbols, dtype=np.float64)  # fmt: skip
    buf = io.BytesIO()
    plot_fills(prices, trades, list(symbols), buf, f"{policy}: fills on the price")
    return png_tag(buf.getvalue())


def policy_sections(policy: str, values: pd.Series, bench: pd.Series | None,
                    prices: pd.DataFrame | None, trades: pd.DataFrame | None,
                    symbols: list[str], prefix: str = "") -> list[tuple[str, str]]:  # fmt: skip
    """Equity, drawdowns, monthly returns, rolling Sharpe ratio and trades of one policy
    (headings start with ``prefix``; no trades: a note in their place)."""
    out = [
        (f"{prefix}Equity", equity_section(values, bench, policy)),
        (f"{prefix}Drawdowns", drawdown_section(values, bench, policy)),
        (f"{prefix}Monthly returns", monthly_section(values, policy)),
        (f"{prefix}Rolling Sharpe ratio", rolling_sharpe_section(values, bench, policy)),
    ]
    if trades is None:
        body = f"<p>{html.escape(policy)}: no trades recorded for this run.</p>"
    else:
        body = trades_section(prices, trades, symbols, policy)
    out.append((f"{prefix}Trades", body))
    return out


def backtest_html(result: BacktestResult, metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """The ``report.html`` of one backtest."""
    policy = config.get("strategy", {}).get("description") or result.policy
    rec = result.record
    sections = [("Metrics", metrics_html(metrics))]
    if "unfilled_orders" in metrics:
        sections.append(("Unfilled orders", unfilled_html(metrics["unfilled_orders"])))
    if "tax_by_year" in metrics:
        sections.append(("Tax by year", tax_html(metrics["tax_by_year"])))
    bench = rec["benchmark"] if "benchmark" in rec else None
    sections += policy_sections(policy, rec["value"], bench, closes(result), result.trades,
                                result.symbols)  # fmt: skip
    bt = config.get("backtest", {})
    title = f"{policy} on {', '.join(result.symbols)}, {bt.get('first')}..{bt.get('last')}"
    if result.terminated:
        sections.insert(0, ("Stopped early", "<p>The portfolio fell below the ruin floor: "
                            "the backtest ended there.</p>"))  # fmt: skip
    return page(title, sections)
