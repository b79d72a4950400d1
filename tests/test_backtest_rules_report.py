"""The backtest report under KRX rules: unfilled orders by status and the tax paid by
calendar year, in metrics.json, the printed summary and report.html, checked on a
hand-made KRX frame spanning the 2023 -> 2024 tax change (0.20 % -> 0.18 % on KOSPI,
by settlement date)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from stockgym.backtest import run_policy
from stockgym.backtest.formatting import format_costs, format_rules
from stockgym.backtest.report import format_report, tax_by_year, unfilled_orders, write_backtest

V0 = 1_000_000.0
DATES = pd.DatetimeIndex(
    ["2023-12-26", "2023-12-27", "2023-12-28", "2024-01-02", "2024-01-03", "2024-01-04",
     "2024-01-05", "2024-01-08"], name="date",
)  # fmt: skip
# Bar 5 (2024-01-04) is locked at the upper limit: one price all day at prev close * 1.3.
CLOSES = [10_000.0, 10_050.0, 10_100.0, 10_000.0, 10_000.0, 13_000.0, 13_100.0, 13_000.0]
OPENS = [10_000.0, 10_020.0, 10_080.0, 10_020.0, 10_010.0, 13_000.0, 13_050.0, 13_020.0]
# Target weights decided at each close, filled at the next open: a buy too big for the
# volume cap (capped at 50 shares), sell all in 2023, buy and sell again in 2024, then a
# buy on the locked bar.
WEIGHTS = [0.9, 0.0, 0.4, 0.0, 0.4, 0.0, 0.0]
VOLUME = 50_000.0
PARTICIPATION = 0.001  # 50 shares per order at most
# KOSPI's securities transaction + rural special tax in force at settlement (T+2 over the
# data's dates): the 2023 sale fills on 2023-12-28 and settles on 2024-01-03, so it pays
# 2024's 0.18 %, as it did at KRX; it counts in 2023, the year of its trade date.
RATES = {2023: 0.0018, 2024: 0.0018}


def krx_frame() -> pd.DataFrame:
    o, c = np.array(OPENS), np.array(CLOSES)
    frame = pd.DataFrame(
        {"open": o, "high": np.maximum(o, c) + 10, "low": np.minimum(o, c) - 10, "close": c,
         "volume": np.full(len(c), VOLUME)}, index=DATES,
    )  # fmt: skip
    frame.iloc[5, :4] = CLOSES[4] * 1.3
    return frame


def scripted():
    step = iter(WEIGHTS)
    return lambda obs: np.array([next(step)], np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    prices = krx_frame()
    env_config = {
        "prices": prices,
        "features": [],
        "extra_features": pd.DataFrame({"x": np.zeros(len(prices))}, index=prices.index),
        "window_size": 1,
        "initial_cash": V0,
        "action_type": "continuous",
        "market": "krx",
        "max_participation": PARTICIPATION,
    }
    result = run_policy(scripted(), env_config, benchmark=None)
    config = {
        "strategy": {"description": "scripted"},
        "env": result.env_config,
        "data": {"source": "hand"},
        "market": "krx",
        "backtest": {**result.period, "note": ""},
        "benchmark": {"symbols": result.symbols},
    }
    out = tmp_path_factory.mktemp("krx_report")
    metrics = write_backtest(result, out, config, plots=True)
    return result, config, metrics, out


def test_the_run_has_the_orders_the_test_relies_on(run):
    result, *_ = run
    t = result.trades
    assert list(t["status"]) == ["capped", "filled", "filled", "filled", "limit_locked"]
    assert list(t["side"]) == ["buy", "sell", "buy", "sell", "buy"]
    assert t["filled"].iloc[0] == VOLUME * PARTICIPATION < t["requested"].iloc[0]
    assert t["reason"].iloc[0].startswith("volume cap") and t["reason"].iloc[1] == ""
    assert "upper price limit" in t["reason"].iloc[4]


def test_tax_by_year_sums_trades_and_matches_the_krx_rates(run):
    result, _, metrics, out = run
    t = result.trades
    table = tax_by_year(t)
    assert list(table.index) == [2023, 2024]
    years = pd.to_datetime(t["date"]).dt.year
    for year, rate in RATES.items():
        in_year = t[years == year]
        sells = in_year[(in_year["side"] == "sell") & (in_year["filled"] != 0)]
        assert len(sells) == 1
        assert table.loc[year, "tax"] == pytest.approx(in_year["tax"].sum(), rel=1e-12)
        assert table.loc[year, "sell_value"] == pytest.approx(sells["value"].sum(), rel=1e-12)
        assert table.loc[year, "tax"] == pytest.approx(rate * sells["value"].sum(), rel=1e-12)
        assert table.loc[year, "rate"] == pytest.approx(rate, rel=1e-12)
        saved = json.loads((out / "metrics.json").read_text())["tax_by_year"][str(year)]
        assert saved["tax"] == pytest.approx(table.loc[year, "tax"], rel=1e-12)
        assert saved["rate"] == pytest.approx(rate, rel=1e-12)
    assert metrics["tax_by_year"]["2024"]["tax"] == pytest.approx(table.loc[2024, "tax"])


def test_unfilled_orders_by_status(run):
    result, _, metrics, out = run
    t = result.trades
    table = unfilled_orders(t)
    assert list(table.index) == ["capped", "limit_locked"]
    assert table["orders"].tolist() == [1, 1]
    capped, locked = t.iloc[0], t.iloc[4]
    assert table.loc["capped", "shares"] == capped["requested"] - capped["filled"]
    assert table.loc["capped", "value"] == pytest.approx(
        (capped["requested"] - capped["filled"]) * capped["price"], rel=1e-12
    )
    assert table.loc["limit_locked", "shares"] == locked["requested"]
    assert locked["price"] == 0.0 and math.isnan(table.loc["limit_locked", "value"])
    saved = json.loads((out / "metrics.json").read_text())["unfilled_orders"]
    assert saved == metrics["unfilled_orders"] | {
        "limit_locked": {**metrics["unfilled_orders"]["limit_locked"], "value": None}
    }
    assert saved["capped"]["orders"] == 1 and saved["limit_locked"]["value"] is None


def test_unfilled_orders_by_hand():
    trades = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-02"] * 4 + ["2025-03-04"]),
            "side": ["buy", "sell", "buy", "buy", "sell"],
            "requested": [10.0, -8.0, 5.0, 7.0, -4.0],
            "filled": [6.0, -8.0, 0.0, 0.0, -1.0],
            "price": [100.0, 50.0, 0.0, 20.0, 10.0],
            "value": [600.0, 400.0, 0.0, 0.0, 10.0],
            "tax": [0.0, 0.8, 0.0, 0.0, 0.015],
            "status": ["scaled", "filled", "not_tradable", "scaled", "capped"],
        }
    )
    table = unfilled_orders(trades)
    assert list(table.index) == ["scaled", "capped", "not_tradable"]
    assert table.loc["scaled"].tolist() == [2, 4.0 + 7.0, 4 * 100.0 + 7 * 20.0]
    assert table.loc["capped"].tolist() == [1, 3.0, 30.0]
    assert math.isnan(table.loc["not_tradable", "value"])
    tax = tax_by_year(trades)
    assert tax.loc[2024].tolist() == pytest.approx([400.0, 0.8, 0.002], rel=1e-12)
    assert tax.loc[2025].tolist() == pytest.approx([10.0, 0.015, 0.0015])
    assert unfilled_orders(trades.iloc[1:2]).empty and tax_by_year(trades.iloc[:0]).empty


def test_report_html_and_summary_show_both_tables(run):
    _, config, metrics, out = run
    html = (out / "report.html").read_text()
    assert "<h2>Unfilled orders</h2>" in html and "<h2>Tax by year</h2>" in html
    assert "limit_locked" in html and "capped" in html
    assert "2023" in html and "2024" in html and "0.1800%" in html and "0.2000%" not in html
    text = format_report(config, metrics, out)
    assert "sell tax KRX by settlement date (T+2) (see tax by year)" in text
    assert "sell tax 0." not in text
    assert "price limit on, ticks on, max participation 0.1% of volume, impact none" in text
    assert "unfilled   capped 1" in text and "limit_locked 1" in text
    assert "2023:" in text and "2024:" in text and "= 0.1800%" in text


def test_old_configs_without_rules_still_format():
    costs = {"commission": 0.001, "sell_tax": 0.0023, "slippage_bps": 5.0,
             "min_commission": 0.0, "borrow_rate": 0.0}  # fmt: skip
    assert "sell tax 0.2300%" in format_costs(costs)
    assert "sell tax 0.2300%" in format_costs(costs, {"tax_schedule": None})
    assert "KRX by settlement date (T+2)" in format_costs(costs, {"tax_schedule": "krx"})
    rules = {"price_limit": False, "ticks": False, "max_participation": None,
             "impact": "sqrt", "impact_coef": 0.01, "boards": []}  # fmt: skip
    assert format_rules(rules) == (
        "price limit off, ticks off, max participation none, impact sqrt (coef 0.01)"
    )
    config = {
        "strategy": {"description": "old"},
        "env": {"symbols": ["AAA"], "fill": "open", "costs": costs},
        "data": {"source": "hand"},
        "market": "krx",
        "backtest": {"first": "2020-01-02", "last": "2020-02-03", "days": 20},
        "benchmark": {"symbols": ["AAA"]},
    }
    text = format_report(config, {"sharpe": 0.5}, "nowhere")
    assert "sell tax 0.2300%" in text
    assert "rules" not in text and "unfilled" not in text and "tax   " not in text
