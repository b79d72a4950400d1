"""Walk-forward forecasts: the refit contract, no look-ahead, the cache, env features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# the shared autouse fixtures: one torch thread; MPLCONFIGDIR, cache dir and cwd in tmp
from test_forecasters import isolated  # noqa: F401

from stockgym.data import DataError, LookaheadError, check_no_lookahead, load_prices
from stockgym.envs import StockTradingEnv
from stockgym.forecasters import ForecastConfig, WalkForwardConfig, env_features, walk_forward

FAST = ForecastConfig(
    model="mlp",
    window=5,
    hidden_size=8,
    num_layers=1,
    dropout=0.0,
    epochs=3,
    patience=2,
    batch_size=64,
)


def wf_config(**kw) -> WalkForwardConfig:
    return WalkForwardConfig(**{"forecast": FAST, "refit_every": 60, "min_train": 150, **kw})


@pytest.fixture(scope="module")
def prices():
    return load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=400, seed=1)


@pytest.fixture(scope="module")
def forecasts(prices):
    return walk_forward(prices, wf_config(), cache=False)


def test_refit_contract(forecasts, prices):
    refits = forecasts.attrs["refits"]
    assert len(refits) == 4
    assert forecasts.index[0] == pd.Timestamp(refits[0]["date"])
    assert forecasts.index[-1] == prices.index[-1]  # a forecast for the last bar too
    assert np.isfinite(forecasts["forecast"]).all() and forecasts["forecast"].std() > 0
    for r, nxt in zip(refits, refits[1:] + [None], strict=True):
        # every training target is dated <= the refit date, which is <= every forecast date
        assert r["last_target_date"] <= r["date"] == r["first_forecast"]
        if nxt is not None:
            assert r["last_forecast"] < nxt["date"]
            assert r["n_train"] < nxt["n_train"]  # expanding
        assert r["n_train"] + r["n_valid"] <= 150 + 60 * refits.index(r)


def test_forecasts_do_not_use_the_future(prices, forecasts):
    refit_dates = [pd.Timestamp(r["date"]) for r in forecasts.attrs["refits"]]
    probes = [
        refit_dates[1],
        refit_dates[1] - pd.offsets.BDay(1),
        refit_dates[2] + pd.offsets.BDay(9),
    ]
    cfg = wf_config()
    check_no_lookahead(lambda p: walk_forward(p, cfg, cache=False), prices, dates=probes)

    def leaky(p):  # the forecast made after close t+1, dated t: must be caught
        return walk_forward(p, cfg, cache=False).shift(-1)

    with pytest.raises(LookaheadError):
        check_no_lookahead(leaky, prices, dates=probes)


def test_rolling_mode_trains_on_a_fixed_window(prices):
    out = walk_forward(prices, wf_config(mode="rolling", train_size=120), cache=False)
    sizes = {(r["n_train"], r["n_valid"]) for r in out.attrs["refits"]}
    assert sizes == {(120 - 24, 24)}  # 120 samples: 24 validation, 96 train (h=1: no purge)


def test_cache_round_trip_and_keys(prices, tmp_path):
    cfg = wf_config()
    first = walk_forward(prices, cfg)
    path = first.attrs["cache"]
    assert path.startswith(str(tmp_path / "cache" / "forecasts")) and "cached" not in first.attrs
    again = walk_forward(prices, cfg)
    assert again.attrs["cached"] and again.attrs["refits"] == first.attrs["refits"]
    pd.testing.assert_frame_equal(again, first, check_freq=False)
    other = walk_forward(prices, wf_config(refit_every=90))
    assert other.attrs["cache"] != path
    changed = prices.copy()
    changed.iloc[-1, changed.columns.get_loc("close")] *= 1.01
    assert walk_forward(changed, cfg).attrs["cache"] != path  # keyed by the data too
    with open(path, "wb") as fh:
        fh.write(b"garbage")
    fresh = walk_forward(prices, cfg)  # an unreadable cache file is a miss, not a crash
    assert "cached" not in fresh.attrs
    np.testing.assert_array_equal(fresh["forecast"], first["forecast"])


def test_env_features_feed_the_env(prices, forecasts):
    cfg = wf_config()
    fit_end = forecasts.index[100]
    feats = env_features(prices, forecast=cfg, cache=False, fit_end=fit_end)
    assert list(feats.columns) == [
        "log_return",
        "volatility_20",
        "sma_ratio_20",
        "rsi_14",
        "volume_z_20",
        "forecast",
    ]
    assert feats.index[0] == forecasts.index[0]
    assert feats.attrs["scaler"]["fit_end"] == str(fit_end.date())
    fit_rows = feats.loc[:fit_end, "forecast"]
    assert abs(fit_rows.mean()) < 1e-9  # standard-scaled on rows <= fit_end only
    env = StockTradingEnv(prices, features=[], extra_features=feats, window_size=5)
    obs, _ = env.reset(seed=0)
    assert env.obs_layout.feature_names[-1] == "forecast" and obs.shape == (5 * 6 + 2,)
    check_no_lookahead(
        lambda p: env_features(p, forecast=cfg, cache=False, fit_end=fit_end),
        prices,
        dates=[fit_end + pd.offsets.BDay(3), forecasts.index[-30]],
    )


def test_multi_symbol_walk_forward(tmp_path):
    both = load_prices(["A", "B"], source="synthetic", kind="edge", edge=0.3, n_days=300, seed=2)
    cfg = wf_config(min_train=120, refit_every=100)
    out = walk_forward(both, cfg, cache=False)
    assert list(out.columns) == [("A", "forecast"), ("B", "forecast")]
    assert set(out.attrs["refits"]) == {"A", "B"}
    single = walk_forward(both["B"], cfg, cache=False)
    np.testing.assert_array_equal(out[("B", "forecast")], single["forecast"])
    feats = env_features(both, forecast=cfg, cache=False)
    env = StockTradingEnv(both, features=[], extra_features=feats, window_size=3)
    assert env.obs_layout.feature_shape == (3, 2, 6)


def test_bad_walk_forward_input(prices):
    with pytest.raises(DataError, match="min_train"):
        walk_forward(prices, wf_config(min_train=5000), cache=False)
    with pytest.raises(ValueError, match="train_size"):
        wf_config(mode="rolling")
    with pytest.raises(ValueError, match="refit_every"):
        wf_config(refit_every=0)
    with pytest.raises(ValueError, match="unknown WalkForwardConfig"):
        WalkForwardConfig.from_dict({"refit": 3})
    cfg = wf_config(warm_start=True)
    assert WalkForwardConfig.from_dict(cfg.to_dict()) == cfg
