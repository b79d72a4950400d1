"""stockgym.backtest.metrics: each metric against empyrical-reloaded on the same returns,
hand-computed tiny cases, FIFO round trips and the record-based metrics."""

from __future__ import annotations

import json
import math
import statistics

import empyrical  # the dev extra: a missing or broken install fails here, never skips
import numpy as np
import pandas as pd
import pytest

from stockgym.backtest import metrics as M

RF = 0.03  # annual
RF_DAILY = (1 + RF) ** (1 / 252) - 1


def returns_cases():
    rng = np.random.default_rng(7)
    return {
        "noise": rng.normal(0.0004, 0.015, 500),
        "trend-down": rng.normal(-0.001, 0.02, 300),
        "fat-tails": rng.standard_t(3, 800) * 0.01,
        "short": np.array([0.01, -0.02, 0.015, 0.003]),
        "all-up": np.abs(rng.normal(0.001, 0.002, 50)) + 1e-4,
    }


CASES = returns_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_matches_empyrical(name):
    r = CASES[name]
    s = pd.Series(r)
    assert M.total_return(r) == pytest.approx(empyrical.cum_returns_final(s), rel=1e-12)
    assert M.cagr(r) == pytest.approx(empyrical.annual_return(s), rel=1e-12)
    assert M.volatility(r) == pytest.approx(empyrical.annual_volatility(s), rel=1e-12)
    assert M.max_drawdown(r) == pytest.approx(empyrical.max_drawdown(s), rel=1e-12, abs=0)
    for rf, rf_d in ((0.0, 0.0), (RF, RF_DAILY)):
        assert M.sharpe(r, rf) == pytest.approx(
            empyrical.sharpe_ratio(s, risk_free=rf_d), rel=1e-10
        )
        assert M.downside_risk(r, rf) == pytest.approx(
            empyrical.downside_risk(s, required_return=rf_d), rel=1e-10
        )
        expected = empyrical.sortino_ratio(s, required_return=rf_d)
        got = M.sortino(r, rf)
        assert got == pytest.approx(expected, rel=1e-10) or (math.isinf(got) and got == expected)
    cal = empyrical.calmar_ratio(s)
    if math.isnan(cal):
        assert math.isnan(M.calmar(r))
    else:
        assert M.calmar(r) == pytest.approx(cal, rel=1e-10)


def test_drawdown_series_matches_empyrical():
    r = CASES["noise"]
    from empyrical.stats import drawdown_series

    np.testing.assert_allclose(M.drawdown(r), drawdown_series(pd.Series(r)).to_numpy(), rtol=1e-12)


def test_hand_computed_tiny_case():
    r = [0.1, -0.2, 0.05]
    # wealth 1 -> 1.1 -> 0.88 -> 0.924
    assert M.total_return(r) == pytest.approx(0.924 - 1, rel=1e-12)
    assert M.cagr(r) == pytest.approx(0.924 ** (252 / 3) - 1, rel=1e-12)
    sd = statistics.stdev(r)
    assert M.volatility(r) == pytest.approx(sd * math.sqrt(252), rel=1e-12)
    assert M.sharpe(r) == pytest.approx(statistics.mean(r) / sd * math.sqrt(252), rel=1e-12)
    down = math.sqrt((0.2**2) / 3) * math.sqrt(252)  # mean over every day, empyrical's way
    assert M.sortino(r) == pytest.approx(statistics.mean(r) * 252 / down, rel=1e-12)
    assert M.max_drawdown(r) == pytest.approx(0.88 / 1.1 - 1, rel=1e-12)
    assert M.max_drawdown_duration(r) == 2  # below the 1.1 peak on the last two days
    assert M.calmar(r) == pytest.approx(M.cagr(r) / 0.2, rel=1e-12)


def test_drawdown_duration_counts_longest_underwater_stretch():
    # wealth 1, .9, .945, 1.0017 (new peak), .9917, .9818, .9719 (three days under)
    r = [-0.1, 0.05, 0.06, -0.01, -0.01, -0.01]
    assert M.max_drawdown_duration(r) == 3
    assert M.max_drawdown_duration([0.01, 0.02]) == 0
    assert M.max_drawdown([0.01, 0.02]) == 0.0


def test_undefined_ratios_are_nan_and_json_null():
    flat = np.zeros(10)
    assert math.isnan(M.sharpe(flat))
    assert math.isnan(M.calmar(flat))
    assert math.isnan(M.volatility([0.01]))
    assert M.sortino(CASES["all-up"]) == math.inf  # no downside at all, as empyrical
    out = M.json_safe({"a": math.nan, "b": math.inf, "c": np.int64(3), "d": {"e": np.float64(0.5)}})
    assert out == {"a": None, "b": None, "c": 3, "d": {"e": 0.5}}
    json.dumps(out, allow_nan=False)


def test_risk_free_lowers_sharpe_by_the_daily_rate():
    r = CASES["noise"]
    adj = r - RF_DAILY
    assert M.sharpe(r, RF) == pytest.approx(adj.mean() / adj.std(ddof=1) * math.sqrt(252))
    assert M.sharpe(r, RF) < M.sharpe(r)


# ------------------------------------------------------------- trades (FIFO)
def trades(*rows):
    cols = ["date", "symbol", "filled", "value", "commission", "tax"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


def test_fifo_round_trips_net_of_costs():
    t = trades(
        ("2024-01-02", "A", 10, 1000.0, 1.0, 0.0),  # lot 1: 100.1 a share with fees
        ("2024-01-03", "A", 10, 1100.0, 1.0, 0.0),  # lot 2: 110.1
        ("2024-01-04", "A", -15, 1800.0, 2.0, 3.0),  # closes lot 1 and half of lot 2
        ("2024-01-05", "A", -5, 500.0, 0.0, 0.0),  # closes the rest of lot 2 at 100
        ("2024-01-05", "B", 3, 30.0, 0.0, 0.0),  # still open: not a closed trade
    )
    closed = M.closed_trades(t)
    assert list(closed["quantity"]) == [15, 5]
    assert closed["pnl"].iloc[0] == pytest.approx(1795.0 - 1001.0 - 550.5)
    assert closed["pnl"].iloc[1] == pytest.approx(500.0 - 550.5)
    assert list(closed["order"]) == [2, 3]
    assert closed["entry_date"].iloc[0] == pd.Timestamp("2024-01-02")
    assert closed["entry_date"].iloc[1] == pd.Timestamp("2024-01-03")
    assert M.win_rate(t) == 0.5


def test_fifo_shorts_and_position_flips():
    t = trades(
        ("2024-01-02", "A", -10, 500.0, 0.0, 0.0),  # short 10 at 50
        ("2024-01-03", "A", 10, 400.0, 0.0, 0.0),  # cover at 40: +100
        ("2024-01-04", "A", 5, 500.0, 0.0, 0.0),  # long 5 at 100
        ("2024-01-05", "A", -8, 720.0, 0.0, 0.0),  # sell 8 at 90: close 5 (-50), short 3
        ("2024-01-08", "A", 3, 300.0, 0.0, 0.0),  # cover 3 at 100: -30
    )
    closed = M.closed_trades(t)
    assert list(closed["side"]) == ["short", "long", "short"]
    np.testing.assert_allclose(closed["pnl"], [100.0, -50.0, -30.0])
    assert list(closed["quantity"]) == [10, 5, 3]
    assert M.win_rate(t) == pytest.approx(1 / 3)


def test_no_closed_trade_gives_nan_win_rate():
    assert math.isnan(M.win_rate(trades(("2024-01-02", "A", 1, 10.0, 0.0, 0.0))))
    assert len(M.closed_trades(trades())) == 0


# ------------------------------------------------------------- record metrics
def test_record_metrics_hand_computed():
    record = pd.DataFrame(
        {
            "value": [100.0, 110.0, 99.0, 99.0],
            "traded_value": [0.0, 100.0, 0.0, 49.5],
            "exposure": [0.0, 1.0, 1.0, 0.0],
            "cost": [0.0, 0.2, 0.0, 0.1],
        },
        index=pd.bdate_range("2024-01-02", periods=4, name="date"),
    )
    t = trades(("2024-01-03", "A", 1, 100.0, 0.2, 0.0), ("2024-01-05", "A", -1, 49.5, 0.1, 0.0))
    m = M.compute_metrics(record, t)
    assert set(m) == set(M.METRIC_KEYS)
    assert m["turnover"] == pytest.approx(100 / 100 + 49.5 / 99)
    assert m["exposure"] == pytest.approx(2 / 3)
    assert m["time_in_market"] == pytest.approx(2 / 3)
    assert m["costs"] == pytest.approx(0.3)
    assert m["costs_fraction"] == pytest.approx(0.003)
    assert m["total_return"] == pytest.approx(-0.01)
    assert m["trades"] == 2 and m["closed_trades"] == 1
    assert m["win_rate"] == 0.0  # sold for 49.4 net what cost 100.2
    assert m["days"] == 3 and m["final_value"] == 99.0
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
