"""KRX rules at their edges: prices under one tick, a capped sell that is not worth its
costs (single and vector env agree), a benchmark on another instrument, US runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_krx_rules import frame, make_env, ohlc

from stockgym.backtest.runner import hold_env
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv, krx


def test_prices_under_one_tick_are_not_rounded():
    # back-adjusted prices far below any KRX quote: neither side moves by its own size
    for buy in (True, False):
        assert krx.round_to_tick(0.3, 0, buy) == 0.3
        assert krx.round_to_tick(1.0, 0, buy) == 1.0  # one tick exactly stays
    assert (krx.round_to_tick(1.4, 0, True), krx.round_to_tick(1.4, 0, False)) == (2.0, 1.0)


def test_the_cap_reason_survives_an_uneconomic_sell():
    # cap of 1 share, minimum commission 500 on a 30 KRW stock: the capped sell is not
    # worth its costs; single env and vector env both say it was capped
    dates = pd.bdate_range("2024-03-04", periods=40)
    c = np.full(40, 30.0)
    df = pd.DataFrame({"open": c, "high": c, "low": c * 0.99, "close": c, "volume": 1e3}, dates)
    kw = dict(market="krx", window_size=5, action_type="continuous", max_participation=0.001)
    kw.update(min_commission=500.0, initial_cash=1e4, features=["log_return"])
    env, venv = StockTradingEnv(df, **kw), VectorStockTradingEnv(df, 1, **kw)
    env.reset(seed=0), venv.reset(seed=0)
    for a in (1.0, 1.0, 0.0):
        _, _, _, _, info = env.step(np.array([a], np.float32))
        _, _, _, _, vinfo = venv.step(np.array([[a]], np.float32))
    (order,) = info["trades"]
    assert order["status"] == "uneconomic" and order["filled"] == 0.0
    assert order["reason"].startswith("volume cap") and "below the order's costs" in order["reason"]
    assert bool(vinfo["capped"][0, 0]) and float(vinfo["filled"][0, 0]) == 0.0


def test_a_benchmark_on_another_instrument_keeps_the_costs_not_the_stock_rules():
    prices = frame([ohlc(50_000)] * 6, "2024-03-04")
    env = make_env(prices, max_participation=0.01, impact="sqrt")
    index = frame([ohlc(2_601.37)] * 6, "2024-03-04")
    bench = hold_env(env, index)
    r = bench.rules
    assert r.tax_schedule == "krx" and bench.costs == env.costs
    assert not (r.ticks or r.price_limit) and r.max_participation is None and r.impact is None
    own = hold_env(env).rules  # on the env's own market: the same rules as the env
    assert own == env.rules


def test_us_runs_carry_no_krx_board():
    prices = frame([ohlc(100.0)] * 6, "2024-03-04")
    assert make_env(prices, market="us").rules.boards == ()
