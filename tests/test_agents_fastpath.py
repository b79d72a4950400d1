"""The speed paths of the agents keep the semantics: the numpy-vectorized CartPole with
same-step autoreset steps like Gymnasium's single CartPole, PPO's one-log-softmax
evaluation equals ``Policy.evaluate``, and ``PPOConfig.for_env`` gives the tuned
defaults (see ``benchmarks/bench_sb3.py``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from stockgym.agents import PPO
from stockgym.agents.common import SameStepCartPole
from stockgym.agents.ppo import ENV_DEFAULTS, PPOConfig


def test_cartpole_fast_path_steps_like_the_single_env():
    vec = SameStepCartPole.make("CartPole-v1", 4)
    assert vec is not None and vec.metadata["autoreset_mode"].value == "SameStep"
    vec.reset(seed=0)
    singles = [gym.make("CartPole-v1").unwrapped for _ in range(4)]
    for i, env in enumerate(singles):
        env.reset(seed=i)
        env.state = vec.env.state[:, i].copy()
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 2, 4)
        obs, rew, term, _, info = vec.step(a)
        for i, env in enumerate(singles):
            o, r, t, _, _ = env.step(int(a[i]))
            got = info["final_obs"][i] if term[i] else obs[i]
            np.testing.assert_allclose(got, o, rtol=1e-5, atol=1e-6)
            assert r == rew[i] and t == term[i]
            if t:  # same-step autoreset: a fresh start at once, then real transitions
                assert np.all(np.abs(obs[i]) <= 0.05)
                env.reset()
                env.state = vec.env.state[:, i].copy()


def test_cartpole_episode_ends_at_500_and_the_next_step_is_real():
    vec = SameStepCartPole.make("CartPole-v1", 2)
    vec.reset(seed=1)
    for k in range(1, 501):
        vec.env.state[:] = 0.0  # keep the pole up: no termination
        obs, rew, term, trunc, info = vec.step(np.array([0, 1]))
        assert rew.tolist() == [1.0, 1.0] and not term.any()
        assert trunc.all() == (k == 500)
    assert "final_obs" in info and np.all(np.abs(obs) <= 0.05)
    _, rew, term, trunc, _ = vec.step(np.array([0, 1]))
    assert rew.tolist() == [1.0, 1.0] and not (term | trunc).any()


def test_ppo_on_an_env_id_uses_the_fast_path():
    agent = PPO("CartPole-v1", num_envs=3, device="cpu")
    assert isinstance(agent.env.env, SameStepCartPole) and agent.env.num_envs == 3
    agent.learn(64)
    assert agent.num_timesteps >= 64


def test_one_log_softmax_evaluation_equals_policy_evaluate():
    agent = PPO("CartPole-v1", num_envs=2, device="cpu")
    obs = torch.randn(50, 4)
    raw = torch.randint(0, 2, (50,))
    lp, ent = agent._evaluate(obs, raw)
    lp0, ent0 = agent.nets["actor"].evaluate(obs, raw)
    torch.testing.assert_close(lp, lp0)
    torch.testing.assert_close(ent, ent0)


def test_for_env_gives_the_tuned_defaults_then_overrides():
    c = PPOConfig.for_env("CartPole-v1", seed=7, learning_rate=1e-4)
    tuned = ENV_DEFAULTS["CartPole-v1"]
    assert c.num_envs == tuned["num_envs"] and c.update_epochs == tuned["update_epochs"]
    assert c.clip_vloss is tuned["clip_vloss"] and c.seed == 7 and c.learning_rate == 1e-4
    assert PPOConfig.for_env("Pendulum-v1") == PPOConfig()
