"""StockTradingEnv API: Gymnasium / SB3 checkers, observations the caller may keep, no
look-ahead, bad input, seeding, multi-asset actions, obs layout, rewards and render."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import stockgym  # noqa: F401  (registers stockgym/StockTrading-v0)
from stockgym.data import DataError, FeatureScaler, build_features, load_prices
from stockgym.envs import ENV_ID, StockTradingEnv

SYMBOLS = ["AAA", "BBB", "CCC"]


def synth(n_assets: int = 1, n_days: int = 200, seed: int = 0) -> pd.DataFrame:
    names = SYMBOLS[:n_assets]
    return load_prices(
        names if n_assets > 1 else names[0], source="synthetic", n_days=n_days, seed=seed
    )


def hand_frame(opens, closes, start="2024-01-02") -> pd.DataFrame:
    idx = pd.bdate_range(start, periods=len(opens), name="date")
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) + 1,
            "low": np.minimum(o, c) - 1,
            "close": c,
            "volume": np.full(len(o), 1e5),
        },
        index=idx,
    )


def hand_env(prices, **kw) -> StockTradingEnv:
    extra = pd.DataFrame({"x": np.arange(len(prices), dtype=float)}, index=prices.index)
    kw.setdefault("initial_cash", 1e6)
    return StockTradingEnv(prices, features=[], extra_features=extra, window_size=1, **kw)


def state(env):
    u = env.unwrapped
    return (u.portfolio_value, u._cash, list(u._shares), u._t)


CONFIGS = [
    pytest.param(1, "discrete", False, id="1-discrete"),
    pytest.param(1, "continuous", False, id="1-continuous"),
    pytest.param(1, "discrete", True, id="1-discrete-short"),
    pytest.param(3, "discrete", False, id="3-multidiscrete"),
    pytest.param(3, "continuous", False, id="3-continuous"),
    pytest.param(3, "continuous", True, id="3-continuous-short"),
]


# ----------------------------------------------------------------- 1. checkers
@pytest.mark.parametrize("n_assets,action_type,allow_short", CONFIGS)
def test_gymnasium_and_sb3_env_checkers(n_assets, action_type, allow_short):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    prices = synth(n_assets)
    env = StockTradingEnv(prices, window_size=5, action_type=action_type, allow_short=allow_short)
    gym_check_env(env)
    sb3_check_env(env, warn=True)
    made = gym.make(
        ENV_ID, prices=prices, window_size=5, action_type=action_type, allow_short=allow_short
    )
    assert isinstance(made.unwrapped, StockTradingEnv)
    gym_check_env(made.unwrapped)
    sb3_check_env(made, warn=True)
    obs, _ = made.reset(seed=0)
    assert made.observation_space.contains(obs)
    assert obs.dtype == np.float32
    assert obs.shape == (made.unwrapped.obs_layout.size,)
    made.close()


@pytest.mark.parametrize("n_assets,action_type,allow_short", CONFIGS)
def test_returned_observations_are_callers_to_keep(n_assets, action_type, allow_short):
    env = StockTradingEnv(
        synth(n_assets), window_size=5, action_type=action_type, allow_short=allow_short
    )
    env.action_space.seed(0)
    obs0, info0 = env.reset(seed=0)
    kept = [(obs0, obs0.copy(), info0["position"].copy(), info0["position"])]
    for _ in range(8):
        obs, _, _, _, info = env.step(env.action_space.sample())
        kept.append((obs, obs.copy(), info["position"].copy(), info["position"]))
    for k, (obs, snapshot, pos_copy, pos) in enumerate(kept):
        assert np.array_equal(obs, snapshot), f"obs of step {k} changed later"
        assert np.array_equal(pos, pos_copy), f"position of step {k} changed later"
        for later, *_ in kept[k + 1 :]:
            assert not np.shares_memory(obs, later)


# -------------------------------------------------------------- 5. no look-ahead
def _perturb_after(prices: pd.DataFrame, t_date, rng) -> pd.DataFrame:
    """Scale every bar strictly after t_date (OHLC by one factor, volume by another)."""
    out = prices.copy()
    after = out.index > t_date
    n = int(after.sum())
    symbols = (
        list(dict.fromkeys(out.columns.get_level_values(0))) if out.columns.nlevels == 2 else [None]
    )
    for s in symbols:
        f = rng.uniform(0.5, 2.0, n)
        g = rng.uniform(0.2, 5.0, n)
        for col in ("open", "high", "low", "close"):
            key = col if s is None else (s, col)
            out.loc[after, key] = out.loc[after, key].to_numpy() * f
        key = "volume" if s is None else (s, "volume")
        out.loc[after, key] = out.loc[after, key].to_numpy() * g
    return out


@settings(max_examples=25, deadline=None)
@given(
    n_assets=st.sampled_from([1, 2]),
    use_scaler=st.booleans(),
    data_seed=st.integers(0, 10_000),
    t_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_lookahead_perturbing_the_future(n_assets, use_scaler, data_seed, t_frac, seed):
    # a list of symbols (even of one) gives (symbol, field) columns
    prices = load_prices(SYMBOLS[:n_assets], source="synthetic", n_days=90, seed=data_seed)
    base = StockTradingEnv(prices, window_size=4, market="krx")
    dates = base.market.dates
    start = base.window_size - 1
    t_idx = start + int(t_frac * (len(dates) - 2 - start))  # at least one bar after t
    t_date = dates[t_idx]
    rng = np.random.default_rng(seed)
    moved_prices = _perturb_after(prices, t_date, rng)

    def make(p):
        scaler = None
        if use_scaler:  # fit by the caller on its own frame, on rows dated <= t only
            scaler = FeatureScaler("standard").fit(build_features(p), end=t_date)
        return StockTradingEnv(p, window_size=4, market="krx", scaler=scaler)

    base, moved = make(prices), make(moved_prices)
    assert moved.market.dates.equals(dates)
    base.action_space.seed(seed % 2**31)
    actions = [base.action_space.sample() for _ in range(len(dates))]

    def run(env):
        obs, info = env.reset()
        out = [(info["date"], obs, info["portfolio_value"])]
        for a in actions:
            obs, _, term, trunc, info = env.step(a)
            out.append((info["date"], obs, info["portfolio_value"]))
            if term or trunc:
                break
        return out

    ra, rb = run(base), run(moved)
    checked = 0
    for (da, oa, va), (db, ob, vb) in zip(ra, rb, strict=False):
        assert da == db
        if da <= t_date:
            assert np.array_equal(oa, ob), f"observation dated {da.date()} saw the future"
            assert va == vb
            checked += 1
    assert checked == t_idx - start + 1
    # the perturbation is real: the first observation after t differs
    first_after = next(o for d, o, _ in ra if d > t_date)
    first_after_b = next(o for d, o, _ in rb if d > t_date)
    assert not np.array_equal(first_after, first_after_b)


def test_scaler_fit_on_flat_single_symbol_features():
    prices = synth(1, n_days=200, seed=1)  # load_prices("AAA"): flat columns
    feats = build_features(prices)
    scaler = FeatureScaler("standard").fit(feats, end=feats.index[80])
    env = StockTradingEnv(prices, window_size=5, scaler=scaler)
    obs, _ = env.reset()
    want = scaler.transform(feats).iloc[:5].to_numpy().astype(np.float32)
    assert np.array_equal(obs[env.obs_layout.features].reshape(5, 5), want)


# ------------------------------------------------------------------ 8. bad input
BAD_ACTIONS = [
    pytest.param(dict(), 2, "action space", id="discrete-too-big"),
    pytest.param(dict(), -1, "action space", id="discrete-negative"),
    pytest.param(dict(), 0.5, "integer", id="discrete-fraction"),
    pytest.param(dict(), np.array([0, 1]), "action space", id="discrete-wrong-shape"),
    pytest.param(
        dict(action_type="continuous"), np.array([np.nan], np.float32), "NaN", id="continuous-nan"
    ),
    pytest.param(
        dict(action_type="continuous"),
        np.array([1.5], np.float32),
        "outside",
        id="continuous-above",
    ),
    pytest.param(
        dict(action_type="continuous"),
        np.array([-0.5], np.float32),
        "outside",
        id="continuous-negative-long-only",
    ),
    pytest.param(
        dict(action_type="continuous", allow_short=True),
        np.array([-1.5], np.float32),
        "outside",
        id="continuous-below-short",
    ),
    pytest.param(
        dict(action_type="continuous"),
        np.array([0.5, 0.5], np.float32),
        "expected 1",
        id="continuous-wrong-shape",
    ),
    pytest.param(
        dict(action_type="continuous", clip_actions=True),
        np.array([np.inf], np.float32),
        "NaN or inf",
        id="clip-still-rejects-inf",
    ),
]


@pytest.mark.parametrize("kw,action,match", BAD_ACTIONS)
def test_bad_action_raises_and_leaves_state_unchanged(kw, action, match):
    prices = synth(1, n_days=120, seed=4)
    env = StockTradingEnv(prices, window_size=5, market="krx", **kw)
    twin = StockTradingEnv(prices, window_size=5, market="krx", **kw)
    good = 1 if env.action_type == "discrete" else np.array([0.7], np.float32)
    for e in (env, twin):
        e.reset()
        e.step(good)
    before = state(env)
    assert before[2][0] > 0  # a position is held
    with pytest.raises(ValueError, match=match) as exc:
        env.step(action)
    if "action space" in match:
        assert str(env.action_space) in str(exc.value)
    assert state(env) == before
    # and the env goes on exactly like one that never saw the bad action
    _, ra, _, _, ia = env.step(good)
    _, rb, _, _, ib = twin.step(good)
    assert ra == rb and ia["date"] == ib["date"] and ia["cash"] == ib["cash"]


def test_multidiscrete_bad_actions():
    env = StockTradingEnv(synth(3), window_size=5)
    env.reset()
    before = state(env)
    for bad in ([0, 1], [0, 1, 2], [-1, 0, 0], [[0, 1, 1]] * 2):
        with pytest.raises(ValueError):
            env.step(np.array(bad))
        assert state(env) == before


def test_clip_actions_clips_to_box():
    prices = synth(1, n_days=120, seed=4)
    clipped = StockTradingEnv(prices, window_size=5, action_type="continuous", clip_actions=True)
    plain = StockTradingEnv(prices, window_size=5, action_type="continuous")
    clipped.reset()
    plain.reset()
    for a_clip, a_plain in [(1.7, 1.0), (-0.3, 0.0), (3.0, 1.0), (0.4, 0.4)]:
        _, r1, _, _, i1 = clipped.step(np.array([a_clip], np.float32))
        _, r2, _, _, i2 = plain.step(np.array([a_plain], np.float32))
        assert r1 == r2
        assert i1["position"].tolist() == i2["position"].tolist()
        assert i1["cash"] == i2["cash"]


def test_step_before_reset_raises():
    env = StockTradingEnv(synth(1), window_size=5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_nan_close_on_tradable_day_is_a_data_error():
    prices = synth(1, n_days=100)
    bad_date = prices.index[50]
    prices.loc[bad_date, "close"] = np.nan
    with pytest.raises(DataError) as exc:
        StockTradingEnv(prices, window_size=5)
    msg = str(exc.value)
    assert "close" in msg and str(bad_date.date()) in msg


def test_window_longer_than_data():
    with pytest.raises(DataError, match="window_size"):
        StockTradingEnv(synth(1, n_days=60), window_size=100)
    prices = hand_frame([10.0, 11.0, 12.0], [10.5, 11.5, 12.5])
    extra = pd.DataFrame({"x": [0.0, 1.0, 2.0]}, index=prices.index)
    with pytest.raises(DataError, match="window_size=3"):
        StockTradingEnv(prices, features=[], extra_features=extra, window_size=3)


def test_unknown_feature_lists_valid_names():
    with pytest.raises(DataError) as exc:
        StockTradingEnv(synth(1), features=["log_return", "moon_phase"], window_size=5)
    msg = str(exc.value)
    assert "moon_phase" in msg
    for name in ("log_return", "volatility", "rsi", "volume_z"):
        assert name in msg


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(reward="sharpe"), "reward"),
        (dict(market="nyse"), "market"),
        (dict(fill="vwap"), "fill"),
        (dict(action_type="box"), "action_type"),
        (dict(positions=(-1.0, 1.0)), "allow_short"),
    ],
)
def test_unknown_options_are_value_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        StockTradingEnv(synth(1), window_size=5, **kw)


# ------------------------------------------------------------------ 9. seeding
def _trajectory(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["date"], info["portfolio_value"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["date"], info["portfolio_value"]))
        if term or trunc:
            break
    return out


def test_same_seed_same_trajectory_different_seed_different_start():
    prices = synth(2, n_days=400, seed=9)
    kw = dict(window_size=8, episode_length=40, market="krx")
    e1, e2 = StockTradingEnv(prices, **kw), StockTradingEnv(prices, **kw)
    rng = np.random.default_rng(3)
    actions = [rng.integers(2, size=2) for _ in range(40)]
    t1, t2 = _trajectory(e1, 123, actions), _trajectory(e2, 123, actions)
    assert len(t1) == len(t2) == 41
    for (o1, r1, d1, v1), (o2, r2, d2, v2) in zip(t1, t2, strict=True):
        assert np.array_equal(o1, o2) and r1 == r2 and d1 == d2 and v1 == v2
    # reusing the same env with the same seed repeats the trajectory too
    t3 = _trajectory(e1, 123, actions)
    assert [x[2] for x in t3] == [x[2] for x in t1]
    assert [x[3] for x in t3] == [x[3] for x in t1]
    starts = {e1.reset(seed=s)[1]["date"] for s in range(10)}
    assert len(starts) >= 5
    valid = e1.market.dates[e1.window_size - 1 : len(e1.market.dates) - 40]
    assert starts <= set(valid)


# ------------------------------------------------------------ 11. multi-asset
def test_multidiscrete_all_long_is_equal_weight():
    prices = synth(3, n_days=120, seed=2)
    env = StockTradingEnv(prices, window_size=5, market="none", initial_cash=1e6)
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert env.action_to_weights(np.array([1, 1, 1])) == pytest.approx([1 / 3] * 3, rel=1e-15)
    assert env.action_to_weights(np.array([1, 0, 1])) == [1.0 / 2, 0.0, 1.0 / 2]
    _, info = env.reset()
    s = env.window_size - 1
    opens = env.market.ref_open[s + 1]
    _, _, _, _, info = env.step(np.array([1, 1, 1]))
    want = [math.trunc((1 / 3) * 1e6 / o) for o in opens]
    assert info["position"].tolist() == want
    assert info["weights"].sum() <= 1.0
    assert np.ptp(info["weights"]) < 0.02


def test_continuous_over_budget_scaled_to_one():
    prices = synth(3, n_days=120, seed=2)
    env = StockTradingEnv(
        prices, window_size=5, action_type="continuous", market="none", initial_cash=1e6
    )
    w = env.action_to_weights(np.array([0.8, 0.8, 0.4], np.float32))
    assert w == pytest.approx([0.4, 0.4, 0.2], rel=1e-7)
    assert sum(w) == pytest.approx(1.0, rel=1e-12)
    assert env.action_to_weights(np.array([0.2, 0.3, 0.1])) == pytest.approx([0.2, 0.3, 0.1])
    env.reset()
    s = env.window_size - 1
    opens = env.market.ref_open[s + 1]
    _, _, _, _, info = env.step(np.array([0.8, 0.8, 0.4], np.float32))
    want = [math.trunc(wi * 1e6 / o) for wi, o in zip(w, opens, strict=True)]
    assert info["position"].tolist() == want
    assert info["cash"] >= 0.0


@pytest.mark.parametrize("n_assets", [1, 3])
def test_obs_layout_slices(n_assets):
    prices = synth(n_assets, n_days=150, seed=6)
    names = ["log_return", "rsi_14", "sma_ratio_10"]
    env = StockTradingEnv(prices, features=names, window_size=7, action_type="continuous")
    lay = env.obs_layout
    assert lay.feature_shape == (7, n_assets, 3)
    assert lay.size == 7 * n_assets * 3 + n_assets + 1
    assert env.observation_space.shape == (lay.size,)
    feats = build_features(prices, names)
    dates = env.market.dates
    obs, info = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = dates.get_loc(info["date"])
        window = feats.loc[dates[t - 6 : t + 1]].to_numpy().reshape(7, n_assets, 3)
        assert np.array_equal(
            obs[lay.features].reshape(lay.feature_shape), window.astype(np.float32)
        )
        assert np.array_equal(obs[lay.weights], info["weights"].astype(np.float32))
        assert obs[lay.cash][0] == np.float32(info["cash"] / info["portfolio_value"])
        obs, _, _, _, info = env.step(rng.uniform(0, 1, n_assets).astype(np.float32) / n_assets)


def test_reward_return_and_differential_sharpe():
    prices = synth(1, n_days=120, seed=5)
    kw = dict(window_size=5, market="us", action_type="continuous")
    env_ret = StockTradingEnv(prices, reward="return", **kw)
    env_log = StockTradingEnv(prices, reward="log_return", **kw)
    env_dsr = StockTradingEnv(prices, reward="differential_sharpe", dsr_eta=0.05, **kw)
    for e in (env_ret, env_log, env_dsr):
        e.reset()
    v_prev = 1e7
    rets, dsrs = [], []
    for a in (0.9, 0.3, 1.0, 0.0, 0.6):
        act = np.array([a], np.float32)
        _, r_ret, _, _, i_ret = env_ret.step(act)
        _, r_log, _, _, i_log = env_log.step(act)
        _, r_dsr, _, _, i_dsr = env_dsr.step(act)
        v = i_ret["portfolio_value"]
        assert v == i_log["portfolio_value"] == i_dsr["portfolio_value"]
        assert r_ret == pytest.approx(v / v_prev - 1, rel=1e-12)
        assert r_log == pytest.approx(math.log(v / v_prev), rel=1e-12)
        assert math.isfinite(r_dsr)
        rets.append(v / v_prev - 1)
        dsrs.append(r_dsr)
        v_prev = v
    # Moody & Saffell: D_t = (B dA - A dB / 2) / (B - A^2)^1.5, A and B EMAs with eta
    eta, a, b = 0.05, 0.0, 0.0
    for r, got in zip(rets, dsrs, strict=True):
        da, db = r - a, r * r - b
        var = b - a * a
        want = (b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        a, b = a + eta * da, b + eta * db
    assert dsrs[0] == 0.0 and any(d != 0.0 for d in dsrs[1:])


# ----------------------------------------------------------------- 12. render
def test_render_ansi_one_line_with_date():
    env = StockTradingEnv(synth(2, n_days=100), window_size=5, render_mode="ansi")
    assert env.render() is None  # nothing before reset
    env.reset()
    _, _, _, _, info = env.step(np.array([1, 0]))
    text = env.render()
    assert isinstance(text, str)
    assert "\n" not in text.strip()
    assert str(info["date"].date()) in text
    assert "AAA" in text


def test_render_rgb_array(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path))
    env = StockTradingEnv(synth(1, n_days=100), window_size=5, render_mode="rgb_array")
    env.reset()
    for a in (1, 1, 0, 1):
        env.step(a)
    img = env.render()
    assert isinstance(img, np.ndarray)
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 10 and img.shape[1] > 10
    assert img.dtype == np.uint8
    assert img.min() < img.max()  # something was drawn


def test_render_rgb_array_updates_in_place_and_restarts_per_episode(tmp_path, monkeypatch):
    """One figure per env, updated per frame: later frames show the new bars and fills,
    a new episode starts a clean frame (the same as a fresh env's)."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path))
    env = StockTradingEnv(synth(1, n_days=100), window_size=5, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(1)
    first = env.render()
    for a in (0, 1, 0, 1, 1, 0):
        env.step(a)
    later = env.render()
    assert first.shape == later.shape and not np.array_equal(first, later)
    assert len(env._renderer._buy_xy) >= 2 and len(env._renderer._sell_xy) >= 2
    env.reset(seed=0)
    env.step(1)
    assert np.array_equal(env.render(), first)
