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
