"""Walk-forward forecasts as observation features (stockgym.experiment.forecasts):
no look-ahead through the whole pipeline, cache hits equal recomputations, the run's
envs carry them, and bad specs fail before anything trains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockgym.agents.signals import observation_at
from stockgym.data import load_prices, split
from stockgym.envs import StockTradingEnv
from stockgym.experiment.forecasts import ForecastSpec, forecast_features
from stockgym.experiment.train import fitted_forecasts

SPEC = {
    "model": "mlp",
    "window": 10,
    "min_train": 120,
    "refit_every": 60,
    "epochs": 2,
    "hidden_size": 8,
    "horizon": [1, 3],
}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))


def _prices(n: int = 420, seed: int = 1) -> pd.DataFrame:
    return load_prices("X", source="synthetic", kind="edge", n_days=n, seed=seed)


def _perturbed(prices: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    out = prices.copy()
    later = out.index > t
    rng = np.random.default_rng(0)
    for col in ("open", "high", "low", "close"):
        out.loc[later, col] *= np.exp(rng.normal(0, 0.05, later.sum()))
    out.loc[later, "high"] = out.loc[later, ["open", "high", "low", "close"]].max(axis=1)
    out.loc[later, "low"] = out.loc[later, ["open", "high", "low", "close"]].min(axis=1)
    out.loc[later, "volume"] *= 3
    return out


def test_columns_and_multi_asset():
    prices = _prices()
    f = forecast_features(prices, SPEC, cache=False)
    assert list(f.columns) == ["forecast_mlp_h1", "forecast_mlp_h3"]
    assert np.isfinite(f.to_numpy()).all() and f.index.is_monotonic_increasing
    two = pd.concat({"A": prices, "B": _prices(seed=2)}, axis=1, names=["symbol", "field"])
    m = forecast_features(two, {**SPEC, "horizon": 1}, cache=False)
    assert list(m.columns) == [("A", "forecast_mlp_h1"), ("B", "forecast_mlp_h1")]


def test_no_lookahead_through_forecasts_and_observations():
    """Prices after t changed: every forecast and every observation dated <= t stay
    bit-identical, with t past several refits (first refit at sample 120, every 60)."""
    prices = _prices()
    dates = split(prices).dates
    t = prices.index[300]
    assert pd.Timestamp(dates["train"]["last"]) < t
    other = _perturbed(prices, t)
    f1 = forecast_features(prices, SPEC, cache=False)
    f2 = forecast_features(other, SPEC, cache=False)
    assert len(f1.loc[:t]) > 100
    np.testing.assert_array_equal(f1.loc[:t].to_numpy(), f2.loc[:t].to_numpy())
    assert not np.array_equal(f1.loc[t:].iloc[1:].to_numpy(), f2.loc[t:].iloc[1:].to_numpy())

    envs = []
    for p in (prices, other):
        extra, _ = fitted_forecasts(forecast_features(p, SPEC, cache=False), dates, "standard")
        envs.append(StockTradingEnv(p, window_size=5, extra_features=extra))
    e1, e2 = envs
    assert "forecast_mlp_h3" in e1.obs_layout.feature_names
    last = int(np.searchsorted(e1.market.dates, t, side="right")) - 1
    checked = 0
    for i in range(e1.window_size - 1, last + 1):
        o1 = observation_at(e1, i, [3.0], 1e6)
        o2 = observation_at(e2, i, [3.0], 1e6)
        np.testing.assert_array_equal(o1, o2)
        checked += 1
    assert checked > 50


def test_cache_hit_equals_recomputation(tmp_path):
    prices = _prices()
    fresh = forecast_features(prices, SPEC, cache=False)
    first = forecast_features(prices, SPEC, cache_dir=str(tmp_path / "c"))
    assert list((tmp_path / "c" / "forecasts").glob("*.npz"))  # written
    hit = forecast_features(prices, SPEC, cache_dir=str(tmp_path / "c"))
    for frame in (first, hit):
        assert frame.index.equals(fresh.index) and list(frame.columns) == list(fresh.columns)
        np.testing.assert_array_equal(frame.to_numpy(), fresh.to_numpy())


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": "prophet"}, "forecasts.model must be one of"),
        ({"horizon": 0}, "forecasts.horizon must be >= 1"),
        ({"horizon": [1, 1]}, "lists a value twice"),
        ({"windw": 5}, "unknown \\[env.forecasts\\] key"),
    ],
)
def test_bad_specs_fail_before_training(spec, message):
    with pytest.raises(ValueError, match=message):
        forecast_features(_prices(200), spec)


def test_min_train_past_the_training_period_is_named():
    prices = _prices(300)
    dates = split(prices).dates
    with pytest.raises(ValueError, match="lower forecasts.min_train"):
        spec = {**SPEC, "min_train": 200}
        fitted_forecasts(forecast_features(prices, spec, cache=False), dates, "standard", spec)
    assert ForecastSpec.from_any("lstm").model == "lstm"


def test_multi_asset_run_gets_one_forecast_per_asset(tmp_path):
    from stockgym.experiment import DataSpec, EnvSpec, TrainConfig, load_run, run_env, train

    prices = pd.concat({"A": _prices(seed=1), "B": _prices(seed=2)}, axis=1,
                       names=["symbol", "field"])  # fmt: skip
    cfg = TrainConfig(
        algo="ppo", total_timesteps=256, device="cpu", eval_freq=0, checkpoint_freq=0,
        run_dir=str(tmp_path / "run"), tensorboard=False,
        data=DataSpec(symbols=["A", "B"], source="synthetic"),
        env=EnvSpec(window_size=5, num_envs=4, episode_length=20, action_type="continuous",
                    forecasts={**SPEC, "horizon": 1}),
        agent={"hidden_size": 8},
    )  # fmt: skip
    res = train(cfg, prices=prices)
    layout = res.agent.env.env.obs_layout
    assert layout.n_assets == 2 and layout.feature_names[-1] == "forecast_mlp_h1"
    record, agent = load_run(res.run_dir)
    env = run_env(res.run_dir, record, prices)
    assert env.obs_layout.feature_names == layout.feature_names


def test_run_with_autoencoder_and_forecast_features(tmp_path):
    """[env.autoencoder] adds the walk-forward autoencoder's error and latent code beside
    the forecasts, scaled on the training period, recorded, and rebuilt by run_env."""
    from stockgym.experiment import DataSpec, EnvSpec, TrainConfig, load_run, run_env, train

    prices = _prices(seed=3)
    ae = {"window": 10, "min_train": 120, "refit_every": 60, "epochs": 2, "latent_dim": 2}
    cfg = TrainConfig(
        algo="ppo", total_timesteps=256, device="cpu", eval_freq=0, checkpoint_freq=0,
        run_dir=str(tmp_path / "run"), tensorboard=False,
        data=DataSpec(symbols=["X"], source="synthetic"),
        env=EnvSpec(window_size=5, num_envs=4, episode_length=20,
                    forecasts={**SPEC, "horizon": 1}, autoencoder=ae),
        agent={"hidden_size": 8},
    )  # fmt: skip
    res = train(cfg, prices=prices)
    names = res.agent.env.env.obs_layout.feature_names
    assert names[-4:] == ("forecast_mlp_h1", "ae_error", "ae_z0", "ae_z1")
    record, _ = load_run(res.run_dir)
    assert record["autoencoder"]["latent_dim"] == 2
    env = run_env(res.run_dir, record, prices)
    assert env.obs_layout.feature_names == names
