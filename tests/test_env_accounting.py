"""StockTradingEnv accounting: hand-computed fills and costs per preset, the identity
V = cash + sum(shares * close) and dV = PnL - costs at every step, reward sums, the last
step, buy-and-hold, halted bars and shorts (docs/market-rules.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stockgym.data import load_prices
from stockgym.envs import PRESETS, StockTradingEnv, krx

V0 = 1_000_000.0


# ----------------------------------------------------------------- helpers
def hand_frame(opens, closes, volumes=None, start="2024-01-02") -> pd.DataFrame:
    """A single-asset OHLCV frame; bars with volume 0 get OHLC 0 (a halted day)."""
    n = len(opens)
    idx = pd.bdate_range(start, periods=n, name="date")
    o = np.asarray(opens, dtype=float)
    c = np.asarray(closes, dtype=float)
    vol = np.full(n, 50_000.0) if volumes is None else np.asarray(volumes, dtype=float)
    halted = vol == 0
    frame = pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) + 1.0,
            "low": np.minimum(o, c) - 1.0,
            "close": c,
            "volume": vol,
        },
        index=idx,
    )
    frame.loc[halted, ["open", "high", "low", "close"]] = 0.0
    return frame


def hand_env(prices: pd.DataFrame, **kw) -> StockTradingEnv:
    """window_size=1 and one hand-made feature column: no warm-up eats bars. KRX tick
    rounding is off here (these fills are on exact prices); ticks, price limits and the
    tax by date have their own hand-computed tests in test_krx_rules.py."""
    extra = pd.DataFrame({"x": np.linspace(0.0, 1.0, len(prices))}, index=prices.index)
    kw.setdefault("initial_cash", V0)
    kw.setdefault("ticks", False)
    return StockTradingEnv(prices, features=[], extra_features=extra, window_size=1, **kw)


def approx(x, rel=1e-12):
    return pytest.approx(x, rel=rel, abs=0.0)


def check_trade(trade, **expected):
    keys = "symbol side requested filled price value commission tax slippage status reason"
    assert set(trade) >= set(keys.split())
    for key, want in expected.items():
        if isinstance(want, str):
            assert trade[key] == want, key
        else:
            assert trade[key] == approx(want), key


# ------------------------------------------------- 2. hand-computed 4-bar example
OPENS = [100.0, 102.0, 98.0, 105.0]
CLOSES = [100.5, 103.0, 99.0, 105.5]


@pytest.mark.parametrize("preset", ["krx", "us", "none"])
def test_hand_computed_four_bars(preset):
    c = PRESETS[preset]
    slip = c.slippage_bps / 1e4
    prices = hand_frame(OPENS, CLOSES)
    dates = prices.index
    env = hand_env(prices, market=preset, action_type="continuous")
    obs, info = env.reset()
    assert info["date"] == dates[0]
    assert info["portfolio_value"] == V0

    # step 1: target weight 0.5, filled at open of bar 1 plus slippage, marked at close 1
    fill1 = OPENS[1] * (1 + slip)
    q1 = math.trunc(0.5 * V0 / fill1)
    value1 = q1 * fill1
    comm1 = c.commission * value1
    cash1 = V0 - value1 - comm1
    v1 = cash1 + q1 * CLOSES[1]
    obs, r, term, trunc, info = env.step(np.array([0.5], dtype=np.float32))
    assert (term, trunc) == (False, False)
    assert info["date"] == dates[1]
    assert info["position"].tolist() == [q1]
    assert info["cash"] == approx(cash1)
    assert info["portfolio_value"] == approx(v1)
    assert r == approx(math.log(v1 / V0))
    assert len(info["trades"]) == 1
    check_trade(
        info["trades"][0],
        symbol="asset",
        side="buy",
        requested=q1,
        filled=q1,
        price=fill1,
        value=value1,
        commission=comm1,
        tax=0.0,
        slippage=q1 * (fill1 - OPENS[1]),
        status="filled",
    )
    assert info["cost"] == approx(comm1 + q1 * (fill1 - OPENS[1]))
    assert info["pnl"] == approx(q1 * (CLOSES[1] - OPENS[1]))

    # step 2: flat -> sell everything at open 2 minus slippage; commission and sell tax
    fill2 = OPENS[2] * (1 - slip)
    value2 = q1 * fill2
    comm2 = c.commission * value2
    tax2 = (0.0018 if preset == "krx" else c.sell_tax) * value2  # KRX: 2024's rate
    cash2 = cash1 + value2 - comm2 - tax2
    obs, r, term, trunc, info = env.step(np.array([0.0], dtype=np.float32))
    assert (term, trunc) == (False, False)
    assert info["date"] == dates[2]
    assert info["position"].tolist() == [0.0]
    assert info["cash"] == approx(cash2)
    assert info["portfolio_value"] == approx(cash2)
    assert r == approx(math.log(cash2 / v1))
    check_trade(
        info["trades"][0],
        symbol="asset",
        side="sell",
        requested=-q1,
        filled=-q1,
        price=fill2,
        value=value2,
        commission=comm2,
        tax=tax2,
        slippage=q1 * (OPENS[2] - fill2),
        status="filled",
    )
    assert info["cost"] == approx(comm2 + tax2 + q1 * (OPENS[2] - fill2))
    assert info["pnl"] == approx(q1 * (OPENS[2] - CLOSES[1]))

    # step 3 (the last bar): all in; with a commission the buy is scaled to fit in cash
    fill3 = OPENS[3] * (1 + slip)
    want = math.trunc(cash2 / fill3)
    q3 = want
    status = "filled"
    if q3 * fill3 * (1 + c.commission) > cash2:
        q3 = math.floor(cash2 / (fill3 * (1 + c.commission)))
        status = "scaled"
    if preset == "none":
        assert status == "filled"
    else:
        assert status == "scaled" and q3 < want
    comm3 = c.commission * q3 * fill3
    cash3 = cash2 - q3 * fill3 - comm3
    v3 = cash3 + q3 * CLOSES[3]
    obs, r, term, trunc, info = env.step(np.array([1.0], dtype=np.float32))
    assert (term, trunc) == (False, True)
    assert info["date"] == dates[3]
    assert info["position"].tolist() == [q3]
    assert info["cash"] == approx(cash3)
    assert info["cash"] >= 0.0
    assert info["portfolio_value"] == approx(v3)
    assert r == approx(math.log(v3 / cash2))
    check_trade(
        info["trades"][0],
        side="buy",
        requested=want,
        filled=q3,
        price=fill3,
        commission=comm3,
        status=status,
    )


def test_fill_close_fills_at_close_of_decision_bar():
    c = PRESETS["krx"]
    slip = c.slippage_bps / 1e4
    prices = hand_frame(OPENS, CLOSES)
    env = hand_env(prices, market="krx", action_type="continuous", fill="close")
    env.reset()
    fill = CLOSES[0] * (1 + slip)
    q = math.trunc(0.5 * V0 / fill)
    comm = c.commission * q * fill
    cash = V0 - q * fill - comm
    v1 = cash + q * CLOSES[1]
    _, r, _, _, info = env.step(np.array([0.5], dtype=np.float32))
    assert info["date"] == prices.index[1]
    check_trade(info["trades"][0], price=fill, filled=q, commission=comm, status="filled")
    assert info["cash"] == approx(cash)
    assert info["portfolio_value"] == approx(v1)
    assert r == approx(math.log(v1 / V0))
    assert info["pnl"] == approx(q * (CLOSES[1] - CLOSES[0]))


@pytest.mark.parametrize("weight", [0.01, 0.5])
def test_min_commission_both_sides(weight):
    c = PRESETS["us"]
    slip = c.slippage_bps / 1e4
    min_comm = 20.0
    prices = hand_frame(OPENS, CLOSES)
    env = hand_env(prices, market="us", min_commission=min_comm, action_type="continuous")
    env.reset()
    fill1 = OPENS[1] * (1 + slip)
    q = math.trunc(weight * V0 / fill1)
    comm1 = max(c.commission * q * fill1, min_comm)
    assert (comm1 == min_comm) == (weight == 0.01)
    cash1 = V0 - q * fill1 - comm1
    _, _, _, _, info = env.step(np.array([weight], dtype=np.float32))
    check_trade(info["trades"][0], filled=q, commission=comm1)
    assert info["cash"] == approx(cash1)

    fill2 = OPENS[2] * (1 - slip)
    comm2 = max(c.commission * q * fill2, min_comm)
    cash2 = cash1 + q * fill2 - comm2
    _, _, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    check_trade(info["trades"][0], filled=-q, commission=comm2, tax=0.0)
    assert info["cash"] == approx(cash2)
    assert info["portfolio_value"] == approx(cash2)


# -------------------------------------- 3. + 4. accounting identity in random rollouts
def _synthetic_env(n_assets, *, allow_short, action_type, fractional, **kw):
    symbols = ["AAA", "BBB", "CCC"][:n_assets]
    prices = load_prices(
        symbols if n_assets > 1 else symbols[0], source="synthetic", n_days=1100, seed=11
    )
    return StockTradingEnv(
        prices,
        window_size=5,
        allow_short=allow_short,
        action_type=action_type,
        fractional=fractional,
        market="krx",
        ticks=False,  # synthetic prices near 100 would pay ~1 % a fill in ticks (ruin)
        borrow_rate=0.04,
        min_commission=1.0,
        initial_cash=1e7,
        **kw,
    )


def _random_action(env, rng):
    space = env.action_space
    if env.action_type == "discrete":
        if env.obs_layout.n_assets == 1:
            return int(rng.integers(space.n))
        return rng.integers(len(env.positions), size=env.obs_layout.n_assets)
    return rng.uniform(space.low, space.high).astype(np.float32)


@pytest.mark.parametrize("fractional", [False, True], ids=["whole", "fractional"])
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
@pytest.mark.parametrize("allow_short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("n_assets", [1, 3])
def test_accounting_identity_random_rollout(n_assets, allow_short, action_type, fractional):
    env = _synthetic_env(
        n_assets,
        allow_short=allow_short,
        action_type=action_type,
        fractional=fractional,
        episode_length=1000,
    )
    m = env.market
    date_pos = {d: i for i, d in enumerate(m.dates)}
    rng = np.random.default_rng(1234)
    obs, info = env.reset(seed=5)
    v_start = v_prev = info["portfolio_value"]
    rewards = []
    steps = 0
    n_trades = 0
    while steps < 1000:
        action = _random_action(env, rng)
        obs, r, term, trunc, info = env.step(action)
        steps += 1
        t = date_pos[info["date"]]
        v = info["portfolio_value"]
        pos = info["position"]
        # V = cash + sum(shares * valuation close of info["date"])
        assert v == pytest.approx(info["cash"] + float(pos @ m.mark[t]), rel=1e-12, abs=1e-6)
        assert v == env.portfolio_value
        # V_{t+1} - V_t = PnL - costs
        assert abs((v - v_prev) - (info["pnl"] - info["cost"])) <= 1e-9 * v_prev
        # the cost is the orders' costs plus borrow on shorts held after the trade, at
        # the fill price
        borrow = sum(-q * m.ref_open[t][i] * 0.04 / 252 for i, q in enumerate(pos) if q < 0)
        trade_costs = sum(o["commission"] + o["tax"] + o["slippage"] for o in info["trades"])
        assert info["cost"] == pytest.approx(trade_costs + borrow, rel=1e-9, abs=1e-9)
        assert info["cost"] >= 0.0
        for o in info["trades"]:
            if o["filled"] != 0:
                assert o["commission"] >= 1.0  # min_commission
                assert o["status"] in ("filled", "scaled", "borrow_call")
        assert info["cash"] >= 0.0
        n_trades += sum(o["filled"] != 0 for o in info["trades"])
        assert r == pytest.approx(math.log(v / v_prev), rel=1e-12, abs=1e-15)
        assert info["weights"] == pytest.approx(pos * m.mark[t] / v, rel=1e-12, abs=1e-15)
        assert obs[env.obs_layout.cash][0] == np.float32(info["cash"] / v)
        if not fractional:
            assert np.array_equal(pos, np.trunc(pos))
        if not allow_short:
            assert info["cash"] >= 0.0
            assert np.all(pos >= 0.0)
            assert info["weights"].sum() <= 1.0 + 1e-9
        rewards.append(r)
        v_prev = v
        if term or trunc:
            # 4. the rewards of an episode add up to log(V_end / V_0)
            assert math.fsum(rewards) == pytest.approx(math.log(v / v_start), rel=1e-9, abs=1e-12)
            obs, info = env.reset()
            v_start = v_prev = info["portfolio_value"]
            rewards = []
    assert trunc and steps == 1000 or term  # episode_length=1000 ends exactly here
    assert n_trades > 100


def test_last_step_applies_action_and_end_raises():
    prices = load_prices("AAA", source="synthetic", n_days=120, seed=3)
    env = StockTradingEnv(prices, window_size=5, market="us")
    dates = env.market.dates
    obs, info = env.reset(options={"start": dates[-2]})
    assert info["date"] == dates[-2]
    v0 = info["portfolio_value"]
    obs, r, term, trunc, info = env.step(1)  # long, from flat, on the last step
    assert (term, trunc) == (False, True)
    assert info["date"] == dates[-1]
    assert len(info["trades"]) == 1 and info["trades"][0]["filled"] > 0
    assert info["position"][0] > 0
    assert info["cost"] > 0.0
    assert r == approx(math.log(info["portfolio_value"] / v0))
    assert r != 0.0
    with pytest.raises(RuntimeError):
        env.step(0)
    env.reset()  # and a reset starts a new episode
    env.step(0)


def test_reward_sum_full_episode_default_reward():
    prices = load_prices("AAA", source="synthetic", n_days=400, seed=8)
    env = StockTradingEnv(prices, window_size=10, market="krx")
    rng = np.random.default_rng(0)
    _, info = env.reset()
    v0 = info["portfolio_value"]
    rewards, done = [], False
    while not done:
        _, r, term, trunc, info = env.step(int(rng.integers(2)))
        rewards.append(r)
        done = term or trunc
    assert trunc and info["date"] == env.market.dates[-1]
    assert len(rewards) == len(env.market.dates) - 10
    assert math.fsum(rewards) == pytest.approx(math.log(info["portfolio_value"] / v0), rel=1e-9)
    with pytest.raises(RuntimeError):
        env.step(0)


# ------------------------------------------------------------- 6. buy-and-hold
@pytest.mark.parametrize(
    "preset,cash_mode",
    [("none", "exact"), ("us", "exact"), ("krx", "exact"), ("us", "default"), ("krx", "default")],
)
def test_buy_and_hold_matches_analytic_value(preset, cash_mode):
    c = PRESETS[preset]
    slip = c.slippage_bps / 1e4
    prices = load_prices("AAA", source="synthetic", n_days=300, seed=21)
    probe = StockTradingEnv(prices, window_size=10, market=preset)
    s = probe.window_size - 1
    open1 = probe.market.ref_open[s + 1, 0]
    fill = open1 * (1 + slip)
    if preset == "krx":  # rounded up to the tick in force on the fill date
        table = int(krx.tick_table_ids(probe.market.dates[s + 1 : s + 2], "kospi")[0])
        fill = krx.round_to_tick(fill, table, buy=True)
    if cash_mode == "exact":  # 5000 shares plus their commission plus one cent
        v0 = 5000 * fill * (1 + c.commission) + 0.01
    else:
        v0 = 1e7
    env = StockTradingEnv(prices, window_size=10, market=preset, initial_cash=v0)
    # analytic: the most whole shares the cash buys at the slipped open, after commission
    shares = math.trunc(v0 / fill)
    if shares * fill * (1 + c.commission) > v0:
        shares = math.floor(v0 / (fill * (1 + c.commission)))
    if cash_mode == "exact":
        assert shares == 5000
    cash_left = v0 - shares * fill - c.commission * shares * fill
    _, info = env.reset()
    done = False
    first = True
    rewards = []
    while not done:
        _, r, term, trunc, info = env.step(1)
        rewards.append(r)
        done = term or trunc
        if first:
            assert info["position"].tolist() == [shares]
            first = False
        else:
            assert info["trades"] == []  # holding: nothing more to buy
    close_end = prices["close"].iloc[-1]
    v_end = cash_left + shares * close_end
    assert info["date"] == prices.index[-1]
    assert info["portfolio_value"] == approx(v_end)
    assert math.fsum(rewards) == pytest.approx(math.log(v_end / v0), rel=1e-9)


# ------------------------------------------------------------- 7. halted bar
def test_order_on_halted_bar_not_filled_and_valued_at_last_close():
    opens = [100.0, 101.0, 0.0, 97.0, 99.0]
    closes = [100.0, 102.0, 0.0, 98.0, 100.0]
    vols = [1e5, 1e5, 0.0, 1e5, 1e5]
    prices = hand_frame(opens, closes, vols)
    env = hand_env(prices, market="none", action_type="continuous")
    env.reset()
    _, _, _, _, info = env.step(np.array([0.5], dtype=np.float32))  # buy at open of bar 1
    q = math.trunc(0.5 * V0 / opens[1])
    assert info["position"].tolist() == [q]
    v1 = info["portfolio_value"]
    cash1 = info["cash"]
    # sell order that would fill on the halted bar 2
    _, r, term, trunc, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["date"] == prices.index[2]
    assert len(info["trades"]) == 1
    t = info["trades"][0]
    assert t["status"] == "not_tradable"
    assert t["filled"] == 0.0 and t["requested"] == -q
    assert info["position"].tolist() == [q]
    assert info["cash"] == cash1
    assert info["portfolio_value"] == approx(cash1 + q * closes[1])  # last close
    assert info["portfolio_value"] == approx(v1)
    assert r == 0.0 and info["cost"] == 0.0 and info["pnl"] == 0.0
    # the next tradable bar fills normally at its open
    _, r, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["date"] == prices.index[3]
    check_trade(info["trades"][0], status="filled", filled=-q, price=opens[3])
    assert info["position"].tolist() == [0.0]
    assert info["cash"] == approx(cash1 + q * opens[3])
    assert info["pnl"] == approx(q * (opens[3] - closes[1]))


def test_buy_on_halted_bar_from_flat_not_filled():
    prices = hand_frame([100.0, 101.0, 0.0, 97.0], [100.0, 102.0, 0.0, 98.0], [1e5, 1e5, 0.0, 1e5])
    env = hand_env(prices, market="krx")
    env.reset(options={"start": prices.index[1]})
    _, r, _, _, info = env.step(1)
    assert info["trades"][0]["status"] == "not_tradable"
    assert info["trades"][0]["filled"] == 0.0
    assert info["portfolio_value"] == V0 and info["cash"] == V0 and r == 0.0
    _, _, _, trunc, info = env.step(1)
    assert trunc and info["trades"][0]["status"] in ("filled", "scaled")
    assert info["position"][0] > 0


# ---------------------------------------------------------------- 10. shorts
@pytest.mark.parametrize("preset", ["none", "us"])
def test_short_marked_to_market_with_borrow(preset):
    c = PRESETS[preset]
    slip = c.slippage_bps / 1e4
    rate = 0.05
    opens = [100.0, 100.0, 95.0]
    closes = [100.0, 96.0, 94.0]
    prices = hand_frame(opens, closes)
    env = hand_env(prices, market=preset, allow_short=True, borrow_rate=rate)
    assert env.positions == (-1.0, 0.0, 1.0)
    env.reset()
    _, r, _, _, info = env.step(0)  # short, sold at the next open
    fill = opens[1] * (1 - slip)
    q = -math.trunc(V0 / fill)
    value = -q * fill
    comm = c.commission * value
    tax = c.sell_tax * value
    borrow = -q * opens[1] * rate / 252  # on the short held after the trade, at the open
    cash1 = V0 + value - comm - tax - borrow
    v1 = cash1 + q * closes[1]
    assert info["position"].tolist() == [q]
    check_trade(info["trades"][0], side="sell", filled=q, price=fill, status="filled")
    assert info["pnl"] == approx(-q * (opens[1] - closes[1]))  # price fell: positive PnL
    assert info["pnl"] > 0
    assert info["cost"] == approx(comm + tax + -q * (opens[1] - fill) + borrow)
    assert info["cash"] == approx(cash1)
    assert info["portfolio_value"] == approx(v1)
    assert r == approx(math.log(v1 / V0))
    if preset == "none":
        assert info["pnl"] == -q * (fill - closes[1])
        assert v1 == approx(V0 + -q * (fill - closes[1]) - borrow)
    # cover at the next open (flat): no borrow after the cover
    _, r, _, trunc, info = env.step(1)
    fill2 = opens[2] * (1 + slip)
    comm2 = c.commission * -q * fill2
    cash2 = cash1 + q * fill2 - comm2
    assert trunc
    check_trade(info["trades"][0], side="buy", filled=-q, price=fill2, status="filled")
    assert info["position"].tolist() == [0.0]
    assert info["pnl"] == approx(q * (opens[2] - closes[1]))
    assert info["cash"] == approx(cash2)
    assert info["portfolio_value"] == approx(cash2)


def test_ruin_terminates():
    prices = hand_frame(OPENS, [100.5, 102.0, 99.0, 105.5])
    env = hand_env(prices, market="krx", ruin_floor=0.9999 * V0)
    env.reset()
    _, r, term, trunc, info = env.step(1)  # all in: the costs alone cross the floor
    assert info["portfolio_value"] < 0.9999 * V0
    assert (term, trunc) == (True, False)
    assert r == approx(math.log(info["portfolio_value"] / V0))
    with pytest.raises(RuntimeError):
        env.step(0)


@pytest.mark.parametrize("allow_short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("fill", ["open", "close"])
def test_accounting_identity_with_halted_bars(fill, allow_short):
    prices = load_prices(["AAA", "BBB", "CCC"], source="synthetic", n_days=500, seed=3)
    rng = np.random.default_rng(0)
    for s in ["AAA", "BBB", "CCC"]:
        halt = rng.random(len(prices)) < 0.05
        halt[:40] = False
        for col in ["open", "high", "low", "close", "volume"]:
            prices.loc[halt, (s, col)] = 0.0
        prices.loc[halt, (s, "tradable")] = False
    env = StockTradingEnv(
        prices,
        window_size=5,
        market="krx",
        borrow_rate=0.03,
        allow_short=allow_short,
        action_type="continuous",
        fill=fill,
        fractional=allow_short,
    )
    m = env.market
    date_pos = {d: i for i, d in enumerate(m.dates)}
    _, info = env.reset()
    v_prev = info["portfolio_value"]
    not_tradable = 0
    done = False
    while not done:
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        _, _, term, trunc, info = env.step(a)
        done = term or trunc
        t = date_pos[info["date"]]
        v = info["portfolio_value"]
        assert v == pytest.approx(info["cash"] + float(info["position"] @ m.mark[t]), rel=1e-12)
        assert abs((v - v_prev) - (info["pnl"] - info["cost"])) <= 1e-9 * v_prev
        for o in info["trades"]:
            if o["status"] == "not_tradable":
                assert o["filled"] == 0.0 and o["commission"] == 0.0
                not_tradable += 1
        if not allow_short:
            assert info["cash"] >= 0.0 and np.all(info["position"] >= 0.0)
        v_prev = v
    assert trunc
    assert not_tradable > 20


def test_sell_not_covering_min_commission_is_skipped():
    prices = hand_frame(OPENS, CLOSES)
    env = hand_env(prices, market="us", min_commission=100.0, action_type="continuous")
    env.reset()
    _, _, _, _, info = env.step(np.array([1.5e-4], dtype=np.float32))  # one share
    assert info["position"].tolist() == [1.0]
    assert info["trades"][0]["commission"] == 100.0
    cash1 = info["cash"]
    _, r, _, _, info = env.step(np.array([0.0], dtype=np.float32))  # proceeds < 100
    t = info["trades"][0]
    assert t["status"] == "uneconomic" and t["filled"] == 0.0
    assert info["position"].tolist() == [1.0]
    assert info["cash"] == cash1 and info["cost"] == 0.0
    assert info["portfolio_value"] == approx(cash1 + CLOSES[2])


def test_backtest_stopped_by_ruin_says_so(tmp_path):
    import json

    from stockgym.backtest.report import format_report, write_backtest
    from stockgym.backtest.runner import run_policy

    prices = hand_frame(OPENS, [100.5, 102.0, 99.0, 105.5])
    env = hand_env(prices, market="krx", ruin_floor=0.9999 * V0, action_type="continuous")
    result = run_policy(lambda obs: np.array([1.0], np.float32), env, benchmark=None)
    assert result.terminated and len(result.record) == 2  # stopped after the first step
    config = {
        "strategy": {"description": "all in"},
        "env": env.config(),
        "data": {"source": "hand"},
        "market": "krx",
        "backtest": {**result.period, "note": ""},
        "benchmark": {"symbols": env.symbols},
    }
    metrics = write_backtest(result, tmp_path, config, plots=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_by_ruin"] is True
    text = format_report(config, metrics, tmp_path)
    assert text.startswith("STOPPED") and "ruin floor (999,900.00)" in text
    # a backtest that runs to the end says nothing of the kind
    full = run_policy(lambda obs: np.array([0.0], np.float32), hand_env(prices), benchmark=None)
    (tmp_path / "b").mkdir()
    assert write_backtest(full, tmp_path / "b", config, plots=False)["stopped_by_ruin"] is False
