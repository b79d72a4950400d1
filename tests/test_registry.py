"""Our Gymnasium ids build themselves and work with the ecosystem's own tools, unmodified:
gym.make with no arguments, JSON-friendly kwargs (env.spec.to_json), Gymnasium's env
checker and SB3's make_vec_env."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

import stockgym  # noqa: F401  (registers the ids)
from stockgym.data import load_prices, split
from stockgym.envs.registry import DEFAULT_EPISODE_LENGTH


def test_make_with_no_arguments():
    env = gym.make("stockgym/StockTrading-v0")
    obs, info = env.reset(seed=0)
    base = env.unwrapped
    assert obs.shape == base.observation_space.shape and base.symbols == ["AAPL"]
    assert base.episode_length == DEFAULT_EPISODE_LENGTH
    train_last = split(load_prices("AAPL", source="sample")).dates["train"]["last"]
    assert base.market.dates[-1] == pd.Timestamp(train_last)  # the training period only
    starts = {env.reset(seed=s)[1]["date"] for s in range(5)}
    assert len(starts) > 1  # random starts, not the first bar every time
    check_env(base, skip_render_check=True)
    spec = json.loads(env.spec.to_json())
    assert spec["id"] == "stockgym/StockTrading-v0"


def test_json_friendly_kwargs_choose_the_data():
    env = gym.make("stockgym/StockTrading-v0", symbol="MSFT", period="test", window_size=10,
                   episode_length=None)  # fmt: skip
    _, info = env.reset(seed=0)
    test_first = split(load_prices("MSFT", source="sample")).dates["test"]["first"]
    assert info["date"] == pd.Timestamp(test_first)  # the first decision is the period's first
    again = gym.make(gym.spec("stockgym/StockTrading-v0"), **env.spec.kwargs)
    assert again.unwrapped.symbols == ["MSFT"]
    json.loads(env.spec.to_json())


def test_portfolio_id():
    env = gym.make("stockgym/Portfolio-v0")
    obs, _ = env.reset(seed=0)
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (4,)
    obs, reward, terminated, truncated, info = env.step(np.full(4, 0.25, dtype=np.float32))
    assert np.isfinite(reward) and len(info["weights"]) == 4


def test_prices_still_work_for_python_users():
    prices = load_prices("IBM", source="sample")
    env = gym.make("stockgym/StockTrading-v0", prices=prices, window_size=5)
    assert env.unwrapped.symbols == ["IBM"] and env.unwrapped.market.dates[0] > prices.index[0]


def test_sb3_make_vec_env():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("stockgym/StockTrading-v0", n_envs=2, seed=0)
    PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, device="cpu").learn(64)


@pytest.mark.parametrize("bad, message", [({"period": "later"}, "period must be one of")])
def test_bad_kwargs(bad, message):
    with pytest.raises(ValueError, match=message):
        gym.make("stockgym/StockTrading-v0", **bad)
