"""The single-asset env's scalar step (``execution.rebalance_one``) against the list
path (``execution.rebalance``), which the hand-computed accounting tests pin down:
bit-identical observations, rewards, ends and info over random rollouts in every
configuration the scalar step serves, the list path everywhere else."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from stockgym.envs import StockTradingEnv
from stockgym.envs import trading as trading_module
from stockgym.envs.execution import rebalance, rebalance_one


def random_frame(n: int = 260, seed: int = 0) -> pd.DataFrame:
    """A random-walk OHLCV frame with a few halted bars (volume 0, OHLC 0)."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.01, n))
    vol = rng.uniform(1e4, 1e5, n)
    vol[rng.choice(np.arange(5, n), 12, replace=False)] = 0.0
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": vol,
        },
        index=pd.bdate_range("2021-01-04", periods=n, name="date"),
    )
    frame.loc[vol == 0, ["open", "high", "low", "close"]] = 0.0
    return frame


def make(frame: pd.DataFrame, **kw) -> StockTradingEnv:
    extra = pd.DataFrame({"x": np.linspace(0.0, 1.0, len(frame))}, index=frame.index)
    kw.setdefault("initial_cash", 1_000_000.0)
    kw.setdefault("market", "us")
    return StockTradingEnv(frame, features=[], extra_features=extra, window_size=3, **kw)


SERVED = [
    {},
    {"market": "none"},
    {"market": "krx", "price_limit": False, "ticks": False},  # the sell tax by date
    {"fill": "close"},
    {"fractional": True},
    {"allow_short": True},
    {"allow_short": True, "fractional": True, "borrow_rate": 0.0},
    {"positions": (0.0, 0.25, 0.5, 1.0)},
    {"action_type": "continuous"},
    {"action_type": "continuous", "allow_short": True, "fractional": True},
    {"reward": "return"},
    {"reward": "differential_sharpe"},
    {"commission": 0.0, "slippage_bps": 0.0},
    {"commission": 0.6, "sell_tax": 0.5},  # sells that cannot pay their own costs
    {"initial_cash": 60.0},  # often too little cash for one share
    {"episode_length": 40, "record_history": True},
    {"borrow_rate": 0.05},  # long only: no short to borrow
]
NOT_SERVED = [
    {"min_commission": 1.0},
    {"allow_short": True, "borrow_rate": 0.02},
    {"market": "krx"},  # ticks and price limits
    {"price_limit": True},
    {"ticks": True, "market": "krx", "price_limit": False},
    {"max_participation": 0.1},
    {"impact": "sqrt"},
]


def actions(env: StockTradingEnv, rng: np.random.Generator) -> list:
    if env.action_type == "discrete":
        return [int(a) for a in rng.integers(0, len(env.positions), 400)]
    lo = env.action_space.low[0]
    return [np.array([a], dtype=np.float32) for a in rng.uniform(lo, 1.0, 400)]


def assert_same_step(a: tuple, b: tuple) -> None:
    """Two ``step`` results (or two ``reset`` results) are the same, bit for bit."""
    if len(a) == 2:  # reset: (obs, info)
        a, b = (a[0], 0.0, False, False, a[1]), (b[0], 0.0, False, False, b[1])
    (obs_a, r_a, term_a, trunc_a, info_a), (obs_b, r_b, term_b, trunc_b, info_b) = a, b
    assert obs_a.dtype == obs_b.dtype and obs_a.tobytes() == obs_b.tobytes()
    assert bits(r_a) == bits(r_b) and term_a == term_b and trunc_a == trunc_b
    assert info_a.keys() == info_b.keys()
    for key in ("position", "weights"):
        assert info_a[key].dtype == info_b[key].dtype
        assert info_a[key].tobytes() == info_b[key].tobytes()
    for key in ("date", "portfolio_value", "cash", "cost", "pnl", "trades", "step"):
        assert bits(info_a[key]) == bits(info_b[key]), key


def bits(x):
    """``x`` with every float as its 8 bytes (so -0.0 differs from 0.0)."""
    if isinstance(x, float):
        return struct.pack("<d", x)
    if isinstance(x, list):
        return [bits(v) for v in x]
    if isinstance(x, dict):
        return {k: bits(v) for k, v in x.items()}
    return x


def rollout_pair(cfg: dict, seed: int) -> set[str]:
    """Steps a scalar env and a list-path twin with the same random actions through
    several episodes; returns the order statuses seen."""
    frame = random_frame(seed=seed)
    scalar, lists = make(frame, **cfg), make(frame, **cfg)
    assert scalar._scalar
    lists._scalar = False
    rng = np.random.default_rng(seed)
    statuses: set[str] = set()
    for episode in range(3):
        assert_same_step(scalar.reset(seed=episode), lists.reset(seed=episode))
        for action in actions(scalar, rng):
            out = scalar.step(action)
            assert_same_step(out, lists.step(action))
            statuses.update(t["status"] for t in out[4]["trades"])
            if out[2] or out[3]:
                break
    if cfg.get("record_history"):
        assert scalar._history == lists._history
    return statuses


@pytest.mark.parametrize("cfg", SERVED, ids=[str(c) for c in SERVED])
def test_scalar_step_equals_the_list_path(cfg):
    statuses = set()
    for seed in range(2):
        statuses |= rollout_pair(cfg, seed)
    assert statuses  # orders were made (which kinds: the test below)


def test_the_rollouts_reach_every_order_status_the_scalar_step_makes():
    seen = set()
    for cfg in ({}, {"commission": 0.6, "sell_tax": 0.5}, {"initial_cash": 60.0}):
        seen |= rollout_pair(cfg, 0) | rollout_pair(cfg, 1)
    assert seen >= {"filled", "scaled", "not_tradable", "uneconomic"}


@pytest.mark.parametrize("cfg", NOT_SERVED, ids=[str(c) for c in NOT_SERVED])
def test_other_settings_take_the_list_path(cfg):
    assert not make(random_frame(), **cfg)._scalar


def test_several_assets_take_the_list_path():
    prices = pd.concat({"A": random_frame(seed=0), "B": random_frame(seed=1)}, axis=1)
    env = StockTradingEnv(prices, window_size=3, market="us")
    assert not env._scalar


def test_a_step_the_scalar_path_declines_runs_on_lists(monkeypatch):
    frame = random_frame()
    scalar, lists = make(frame), make(frame)
    lists._scalar = False
    monkeypatch.setattr(trading_module, "rebalance_one", lambda *a: None)
    rng = np.random.default_rng(3)
    assert_same_step(scalar.reset(seed=0), lists.reset(seed=0))
    for action in actions(scalar, rng)[:100]:
        assert_same_step(scalar.step(action), lists.step(action))


def test_rebalance_one_declines_negative_cash_and_matches_rebalance_by_hand():
    env = make(random_frame())
    costs, bar = env.costs, env._bars[10]
    assert rebalance_one(0.0, -1.0, 1.0, 10.0, True, 0.0, costs, False, "X") is None
    for shares, cash, weight in ((0.0, 1e4, 1.0), (100.0, 0.0, 0.0), (100.0, 50.0, 0.5)):
        q, c, orders, cost = rebalance_one(shares, cash, weight, 10.0, True, 0.0, costs, False, "X")
        q2, c2, orders2, borrow = rebalance([shares], cash, [weight], [10.0], [True], costs,
                                            False, ["X"], bar)  # fmt: skip
        assert [q] == q2 and c == c2 and orders == orders2 and borrow == 0.0
        assert cost == sum(o["commission"] + o["tax"] + o["slippage"] for o in orders)


@pytest.mark.parametrize("kind", [int, np.int64, np.int32, np.uint8, bool, float, np.array])
def test_every_form_of_a_discrete_action_steps_alike(kind):
    """The scalar step's own integer check gives what ``action_to_weights`` gives, for
    python and numpy integers, bools, integral floats and 0-d arrays."""
    frame = random_frame()
    env, ref = make(frame), make(frame)
    env.reset(seed=0), ref.reset(seed=0)
    for a in (1, 0, 1, 1, 0):
        assert_same_step(env.step(kind(a)), ref.step(a))


@pytest.mark.parametrize("bad", [2, -1, np.int64(5), 0.5, np.array([0, 1])])
def test_a_bad_discrete_action_raises_and_changes_nothing(bad):
    env = make(random_frame())
    env.reset(seed=0)
    before = (env._t, env._cash, list(env._shares))
    with pytest.raises(ValueError, match="action"):
        env.step(bad)
    assert (env._t, env._cash, list(env._shares)) == before


@pytest.mark.parametrize("cfg", [{}, {"action_type": "continuous"}, *NOT_SERVED[:3]])
def test_the_inline_one_asset_observation_equals_observe(cfg):
    """A one-asset step builds its observation and info inline on scalars; ``_observe``
    (reset, several assets) must give the same bits from the same state."""
    env = make(random_frame(), **cfg)
    env.reset(seed=0)
    for action in actions(env, np.random.default_rng(0))[:150]:
        obs, reward, term, trunc, info = env.step(action)
        again = env._observe(env._t, env._shares, env._cash, env._value, info["cost"],
                             info["pnl"], info["trades"])  # fmt: skip
        assert_same_step((obs, info), again)
        if term or trunc:
            break
