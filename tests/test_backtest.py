"""run_policy and the baselines: hand-computed buy-and-hold, holds that never trade,
signals checked against pandas, determinism, policies of every shape, benchmarks."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stockgym.backtest import STRATEGIES, BacktestResult, make_strategy, run_policy
from stockgym.backtest.strategies import Strategy
from stockgym.data import DataError, load_prices, split
from stockgym.envs import PRESETS, StockTradingEnv, krx

V0 = 1_000_000.0


def hand_frame(opens, closes, volumes=None, start="2024-01-02") -> pd.DataFrame:
    n = len(opens)
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    vol = np.full(n, 5e4) if volumes is None else np.asarray(volumes, float)
    frame = pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) + 1,
            "low": np.minimum(o, c) - 1,
            "close": c,
            "volume": vol,
        },
        index=pd.bdate_range(start, periods=n, name="date"),
    )
    frame.loc[vol == 0, ["open", "high", "low", "close"]] = 0.0
    return frame


def hand_config(prices, extra=None, **kw) -> dict:
    """window_size=1 and one hand-made feature column: no warm-up eats bars."""
    if extra is None:
        extra = pd.DataFrame({"x": np.zeros(len(prices))}, index=prices.index)
    return {
        "prices": prices,
        "features": [],
        "extra_features": extra,
        "window_size": 1,
        "initial_cash": V0,
        **kw,
    }


def synth(symbols=("AAA", "BBB"), n_days=300, seed=0):
    names = list(symbols)
    return load_prices(
        names if len(names) > 1 else names[0], source="synthetic", n_days=n_days, seed=seed
    )


OPENS = [100.0, 102.0, 98.0, 105.0, 107.0]
CLOSES = [100.5, 103.0, 99.0, 105.5, 104.0]


# ------------------------------------------------------------ hand-computed
@pytest.mark.parametrize("preset", ["us", "krx", "none"])
def test_buy_and_hold_equals_analytic_value_minus_costs(preset):
    c = PRESETS[preset]
    frame = hand_frame(OPENS, CLOSES)
    res = run_policy("buy_and_hold", hand_config(frame, market=preset))
    price = OPENS[1] * (1 + c.slippage_bps / 1e4)
    if preset == "krx":  # rounded up to the tick in force on the fill date
        price = krx.round_to_tick(
            price, int(krx.tick_table_ids(frame.index[1:2], "kospi")[0]), True
        )
    n = math.floor(V0 / (price * (1 + c.commission)))  # whole shares that cash affords
    costs = n * price * c.commission + n * (price - OPENS[1])
    rec = res.record
    assert len(rec) == len(OPENS)
    assert rec["value"].iloc[0] == V0 and rec["cash"].iloc[0] == V0
    for t in range(1, len(OPENS)):
        assert rec["value"].iloc[t] == pytest.approx(
            V0 + n * (CLOSES[t] - OPENS[1]) - costs, rel=1e-12
        )
    assert (rec["position_asset"].iloc[1:] == n).all()
    assert rec["cost"].sum() == pytest.approx(costs, rel=1e-12)
    assert res.trades["filled"].tolist() == [n]
    # the benchmark is buy-and-hold through a twin env with the same costs: identical
    np.testing.assert_array_equal(rec["benchmark"].to_numpy(), rec["value"].to_numpy())
    m = res.metrics()
    assert m["total_return"] == pytest.approx(rec["value"].iloc[-1] / V0 - 1, rel=1e-12)
    assert m["trades"] == 1 and m["costs"] == pytest.approx(costs, rel=1e-12)
    assert set(m["benchmark"]) == set(m) - {"benchmark", "alpha", "beta", "information_ratio"}


def test_record_identity_and_dates():
    p = synth()
    res = run_policy("equal_weight", {"prices": p, "window_size": 5}, ("2010-03-01", "2010-09-30"))
    rec = res.record
    assert rec.index[0] == pd.Timestamp("2010-03-01")
    assert rec.index[-1] <= pd.Timestamp("2010-09-30")
    assert rec["trades"].iloc[0] == 0 and rec["value"].iloc[0] == 10_000_000.0
    held = sum(rec[f"position_{s}"] * res.closes[s] for s in res.symbols)
    np.testing.assert_allclose(rec["value"], rec["cash"] + held, rtol=1e-12)
    assert res.period == {
        "first": "2010-03-01",
        "last": str(rec.index[-1].date()),
        "days": len(rec) - 1,
    }
    assert (rec["cash"] >= 0).all()


# ------------------------------------------------------------ holding never trades
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"fractional": True},
        {"market": "none"},
        {"market": "none", "fractional": True},
        {"fill": "close"},
        {"slippage_bps": 37.0, "commission": 0.003},
    ],
    ids=["us", "fractional", "none", "none-fractional", "fill-close", "big-costs"],
)
def test_buy_and_hold_trades_once_per_asset(kw):
    p = synth(("AAA", "BBB", "CCC"))
    res = run_policy("buy_and_hold", {"prices": p, "window_size": 2, **kw})
    filled = res.trades[res.trades["filled"] != 0]
    assert len(filled) == 3
    # orders are dated by their fill bar: the next open, or the decision bar's close
    fill_bar = 0 if kw.get("fill") == "close" else 1
    assert (filled["date"] == res.record.index[fill_bar]).all()
    assert (res.record["trades"].iloc[2:] == 0).all()
    assert res.metrics()["turnover"] < 1.0 + 1e-9


def test_equal_weight_holds_between_monthly_rebalances():
    p = synth(("AAA", "BBB"), n_days=260)
    res = run_policy("equal_weight", {"prices": p, "window_size": 2})
    rec = res.record
    decisions = rec.index[:-1]
    month = decisions.to_period("M")
    rebalance = np.r_[True, month[1:] != month[:-1]]  # first decision of each month
    fill_dates = set(rec.index[1:][rebalance])
    traded_dates = set(res.trades.loc[res.trades["filled"] != 0, "date"])
    assert traded_dates <= fill_dates
    assert len(traded_dates) >= 10  # it does rebalance, about monthly
    pos = rec[[f"position_{s}" for s in res.symbols]].to_numpy()
    for i in range(2, len(rec)):
        if rec.index[i] not in fill_dates:
            np.testing.assert_array_equal(pos[i], pos[i - 1])
            assert rec["cost"].iloc[i] == 0.0
    # right after a rebalance the weights are close to equal
    first = rec.loc[min(fill_dates), [f"weight_{s}" for s in res.symbols]].to_numpy()
    np.testing.assert_allclose(first, [0.5, 0.5], atol=0.01)


# ------------------------------------------------------------ signals
def test_sma_cross_follows_the_moving_averages():
    p = synth(("AAA",), n_days=400, seed=3)
    res = run_policy(
        make_strategy("sma_cross", fast=5, slow=15),
        {"prices": p, "window_size": 1, "market": "none"},
    )
    # the env's valuation closes from its first (post-warm-up) date
    close = pd.Series(res.closes["AAA"])
    env_close = pd.Series(
        StockTradingEnv(p, window_size=1).market.mark[:, 0],
        index=StockTradingEnv(p, window_size=1).market.dates,
    )
    fast = env_close.rolling(5).mean()
    slow = env_close.rolling(15).mean()
    signal = (fast > slow).reindex(close.index)
    held = res.record["position_AAA"] > 0
    # position after the step decided at t reflects the signal at t
    np.testing.assert_array_equal(held.to_numpy()[1:], signal.to_numpy()[:-1])
    assert 5 < res.metrics()["trades"] < len(close) / 2


def test_forecast_sign_goes_long_when_the_forecast_is_positive():
    n = 30
    prices = hand_frame(np.linspace(100, 110, n), np.linspace(100.5, 110.5, n))
    fc = np.where((np.arange(n) // 4) % 2 == 0, 0.01, -0.01)
    extra = pd.DataFrame({"forecast": fc}, index=prices.index)
    res = run_policy("forecast_sign", hand_config(prices, extra, market="none"))
    held = (res.record["position_asset"] > 0).to_numpy()
    np.testing.assert_array_equal(held[1:], fc[:-1] > 0)
    with pytest.raises(ValueError, match="no feature column 'forecast'"):
        run_policy("forecast_sign", hand_config(prices))


def test_random_is_seeded_and_trades_only_on_changes():
    p = synth()
    cfg = {"prices": p, "window_size": 2}
    a = run_policy(make_strategy("random", seed=1), cfg)
    b = run_policy(make_strategy("random", seed=1), cfg)
    c = run_policy(make_strategy("random", seed=2), cfg)
    pd.testing.assert_frame_equal(a.record, b.record)
    assert not a.record["value"].equals(c.record["value"])
    pos = a.record[["position_AAA", "position_BBB"]].to_numpy()
    changed = (np.diff(pos, axis=0) != 0).any(axis=1)
    np.testing.assert_array_equal(changed, a.record["trades"].to_numpy()[1:] > 0)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_baseline_runs_and_is_deterministic(name):
    p = synth()
    extra = pd.DataFrame(
        {s: np.sin(np.arange(len(p)) / 7.0 + k) for k, s in enumerate(["AAA", "BBB"])},
        index=p.index,
    )
    extra = pd.concat(
        {s: extra[[s]].set_axis(["forecast"], axis=1) for s in ["AAA", "BBB"]}, axis=1
    )
    cfg = {"prices": p, "window_size": 3, "extra_features": extra}
    one = run_policy(name, cfg)
    two = run_policy(name, cfg)
    assert isinstance(one, BacktestResult)
    pd.testing.assert_frame_equal(one.record, two.record)
    pd.testing.assert_frame_equal(one.trades, two.trades)
    m = one.metrics()
    assert m["trades"] >= 1 and math.isfinite(m["total_return"])
    assert one.policy == name


# ------------------------------------------------------------ policies and envs
def test_plain_callable_on_a_discrete_env_gets_a_buy_and_hold_benchmark():
    p = synth(("AAA",))
    env = StockTradingEnv(p, window_size=5)  # discrete flat/long
    res = run_policy(lambda obs: 1, env)
    hold = run_policy("buy_and_hold", {"prices": p, "window_size": 5})
    np.testing.assert_allclose(res.record["benchmark"], hold.record["value"], rtol=1e-12)
    # always-long re-targets weight 1 daily: it may top up, so it trades at least once
    assert res.metrics()["trades"] >= 1
    assert res.policy == "<lambda>"


def test_agent_with_predict_and_gym_wrapper():
    import gymnasium as gym

    import stockgym  # noqa: F401

    class Agent:
        def predict(self, obs, deterministic=False):
            assert deterministic is True
            assert obs.shape == env.observation_space.shape
            return 1, None  # always long

    p = synth(("AAA",))
    env = gym.make("stockgym/StockTrading-v0", prices=p, window_size=5, episode_length=None)
    res = run_policy(Agent(), env, benchmark=None)
    assert "benchmark" not in res.record and res.benchmark is None
    assert (res.record["position_AAA"].iloc[1:] > 0).all()


def test_custom_strategy_sees_no_future():
    seen = []

    class Peek(Strategy):
        name = "peek"

        def act(self, obs, info, view):
            seen.append((view.date, view.dates[-1], len(view.closes()), info["date"]))
            with pytest.raises(ValueError):
                view.closes()[0, 0] = 1.0  # read-only
            return None

    res = run_policy(Peek(), {"prices": synth(), "window_size": 3}, benchmark=None)
    for k, (date, last, n_closes, info_date) in enumerate(seen):
        assert date == last == info_date  # the view ends at the decision date
        assert n_closes == 3 + k  # window_size rows at the start, one more each day
    assert len(seen) == len(res.record) - 1 and res.metrics()["trades"] == 0


def test_bad_inputs_are_clear():
    p = synth(("AAA",))
    with pytest.raises(ValueError, match="action_type='continuous'"):
        run_policy("buy_and_hold", StockTradingEnv(p, window_size=2))
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        run_policy("nope", {"prices": p})
    with pytest.raises(ValueError, match="takes parameters"):
        make_strategy("sma_cross", fats=3)
    with pytest.raises(ValueError, match="fast < slow"):
        make_strategy("sma_cross", fast=50, slow=20)
    with pytest.raises(DataError, match="before the first date"):
        run_policy("buy_and_hold", {"prices": p}, ("2000-01-01", None))
    with pytest.raises(ValueError, match="needs 'prices'"):
        run_policy("buy_and_hold", {"window_size": 2})


def test_period_from_split_dates_and_benchmark_of_another_symbol():
    aapl = load_prices("AAPL", "2009-01-01", "2011-12-31", source="sample")
    msft = load_prices("MSFT", "2009-01-01", "2011-12-31", source="sample")
    test = split(aapl).dates["test"]
    res = run_policy("sma_cross", {"prices": aapl}, test, benchmark=msft)
    assert str(res.record.index[0].date()) == test["first"]
    assert str(res.record.index[-1].date()) == test["last"]
    assert res.benchmark.symbols == ["MSFT"]
    ref = run_policy("buy_and_hold", {"prices": msft, "window_size": 1}, test, benchmark=None)
    np.testing.assert_allclose(res.record["benchmark"], ref.record["value"], rtol=1e-12)


def test_halted_first_fill_is_bought_on_the_next_bar():
    prices = hand_frame(OPENS, CLOSES, volumes=[5e4, 0, 5e4, 5e4, 5e4])
    res = run_policy("buy_and_hold", hand_config(prices, market="none"))
    statuses = res.trades["status"].tolist()
    assert statuses == ["not_tradable", "filled"]
    assert res.record["position_asset"].iloc[1] == 0
    assert res.record["position_asset"].iloc[2] == math.floor(V0 / OPENS[2])


def test_importing_backtest_does_not_import_torch_or_matplotlib():
    code = (
        "import sys, stockgym.backtest, stockgym.backtest.strategy_run, stockgym.backtest.report, "
        "stockgym.backtest.compare; "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
