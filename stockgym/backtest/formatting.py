"""How metrics and costs are shown in terminal tables and reports."""

from __future__ import annotations

import math
from typing import Any

from stockgym.backtest.metrics import METRIC_KEYS

# How each metric is shown: pct, ratio, int, days, money, x (multiple).
_FORMATS = {
    "total_return": "pct",
    "cagr": "pct",
    "volatility": "pct",
    "sharpe": "ratio",
    "sortino": "ratio",
    "max_drawdown": "pct",
    "max_drawdown_duration": "days",
    "calmar": "ratio",
    "turnover": "x",
    "trades": "int",
    "closed_trades": "int",
    "win_rate": "pct",
    "exposure": "pct",
    "time_in_market": "pct",
    "costs": "money",
    "costs_fraction": "pct",
    "final_value": "money",
    "days": "int",
}


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


def format_costs(costs: dict[str, float], rules: dict[str, Any] | None = None) -> str:
    """One line naming every cost the run used. With ``rules["tax_schedule"] == "krx"``
    the sell tax is the KRX rate in force on each fill date, not ``costs["sell_tax"]``."""
    if (rules or {}).get("tax_schedule") == "krx":
        tax = "sell tax KRX by settlement date (T+2) (see tax by year)"
    else:
        tax = f"sell tax {costs['sell_tax'] * 100:.4f}%"
    return (
        f"commission {costs['commission'] * 100:.4f}% (both sides), "
        f"{tax}, slippage {costs['slippage_bps']:g} bps, "
        f"min commission {costs['min_commission']:g}, borrow {costs['borrow_rate'] * 100:g}%/yr"
    )


def format_rules(rules: dict[str, Any]) -> str:
    """One line of the exchange rules a run applied (a run config's ``env.rules``)."""
    part = rules.get("max_participation")
    impact = rules.get("impact")
    parts = [
        f"price limit {'on' if rules.get('price_limit') else 'off'}",
        f"ticks {'on' if rules.get('ticks') else 'off'}",
        "max participation " + ("none" if part is None else f"{part * 100:g}% of volume"),
        "impact " + ("none" if impact is None else f"{impact} (coef {rules.get('impact_coef'):g})"),
    ]
    boards = rules.get("boards") or []
    if boards:
        parts.append("board " + "/".join(sorted(set(boards))))
    return ", ".join(parts)


def format_unfilled(table: dict[str, dict[str, Any]] | None) -> list[str]:
    """The report's ``unfilled`` line: orders not filled in full by status, with the
    unfilled shares and (where priced) value; none for a run without the table."""
    if table is None:
        return []
    if not table:
        return ["unfilled   none (every order filled in full)"]
    parts = []
    for status, row in table.items():
        value = row.get("value")
        money = "" if value is None or not math.isfinite(value) else f", value {value:,.0f}"
        parts.append(f"{status} {int(row['orders'])} ({row['shares']:,.0f} sh{money})")
    return ["unfilled   " + "; ".join(parts)]


def format_tax_by_year(table: dict[str, dict[str, Any]] | None) -> list[str]:
    """The report's ``tax`` lines, one per year: tax paid on that year's sales and the
    effective rate; none for a run without the table or without any tax paid."""
    if table is None:
        return []
    if not table:
        return ["tax        none (no orders)"]
    if not any(row.get("tax") for row in table.values()):
        return []  # a market without a sell tax: nothing to show year by year
    lines = []
    for k, (year, row) in enumerate(table.items()):
        rate = row.get("rate")
        eff = "" if rate is None or not math.isfinite(rate) else f" = {rate * 100:.4f}%"
        head = "tax        " if k == 0 else " " * 11
        lines.append(f"{head}{year}: {row['tax']:,.2f} on {row['sell_value']:,.0f} sold{eff}")
    return lines


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
