"""gym.make_vec(id, vectorization_mode="vector_entry_point"): our vector env with numpy in
and out and next-step autoreset, equal to N single envs, under Gymnasium's own vector
wrappers, and picklable."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers.vector import (
    ClipAction,
    FlattenObservation,
    NormalizeObservation,
    NormalizeReward,
    RecordEpisodeStatistics,
)

import stockgym  # noqa: F401
from stockgym.envs import StockTradingEnv
from stockgym.envs.registry import env_data

KW = {"episode_length": 8, "window_size": 5}


def _vec(n: int = 3, **kw):
    return gym.make_vec("stockgym/StockTrading-v0", num_envs=n,
                        vectorization_mode="vector_entry_point", **{**KW, **kw})  # fmt: skip


def test_equals_single_envs_with_next_step_autoreset():
    n = 3
    vec = _vec(n)
    prices, env_kwargs = env_data(**KW)
    singles = [StockTradingEnv(prices, **env_kwargs) for _ in range(n)]
    obs, _ = vec.reset(seed=10)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=10 + i)
        np.testing.assert_array_equal(obs[i], o)
    rng = np.random.default_rng(0)
    restarting = np.zeros(n, dtype=bool)
    ends = 0
    for _ in range(30):
        act = rng.integers(0, 2, n)
        obs, rew, term, trunc, info = vec.step(act)
        for i, env in enumerate(singles):
            if restarting[i]:  # the step after an end: the new episode's first observation
                o, _ = env.reset()
                assert rew[i] == 0.0 and not term[i] and not trunc[i]
            else:
                o, r, te, tr, inf = env.step(int(act[i]))
                # the vector env's documented agreement: 1e-9 on accounting numbers
                assert rew[i] == pytest.approx(r, rel=1e-9, abs=1e-12)
                assert term[i] == te and trunc[i] == tr
                assert info["portfolio_value"][i] == pytest.approx(inf["portfolio_value"], rel=1e-9)
            nf = len(o) - 2  # features bit-equal; weight and cash fraction to float32 rounding
            np.testing.assert_array_equal(obs[i][:nf], o[:nf])
            np.testing.assert_allclose(obs[i][nf:], o[nf:], rtol=1e-6, atol=1e-7)
        restarting = term | trunc
        ends += int(restarting.sum())
    assert ends >= 6


def test_gymnasium_vector_wrappers_accept_it():
    vec = _vec(4)
    stats = RecordEpisodeStatistics(vec)
    env = NormalizeReward(NormalizeObservation(FlattenObservation(stats)))
    env.reset(seed=0)
    seen = []
    for _ in range(40):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        if "episode" in info:
            seen += info["episode"]["r"][info["_episode"]].tolist()
    assert len(seen) >= 8 and all(np.isfinite(seen))
    port = gym.make_vec("stockgym/Portfolio-v0", num_envs=2,
                        vectorization_mode="vector_entry_point", episode_length=5)  # fmt: skip
    clipped = ClipAction(port)
    clipped.reset(seed=0)
    _, rew, *_ = clipped.step(np.full((2, 4), 3.0, dtype=np.float32))  # clipped to the Box
    assert np.isfinite(rew).all()


def test_pickles():
    vec = _vec(2)
    vec.reset(seed=0)
    copy = pickle.loads(pickle.dumps(vec))
    a = np.array([1, 0])
    np.testing.assert_array_equal(vec.step(a)[0], copy.step(a)[0])
