"""The speed paths of the agents keep the semantics: the numpy-vectorized CartPole with
same-step autoreset steps like Gymnasium's single CartPole, PPO's one-log-softmax
evaluation equals ``Policy.evaluate``, ``PPOConfig.for_env`` gives the tuned
defaults (see ``benchmarks/bench_sb3.py``), and the mlp backbone's ``activation``
option (which those defaults use) does what it says and survives a checkpoint."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from stockgym.agents import PPO
from stockgym.agents.common import SameStepCartPole
from stockgym.agents.networks import Encoder, encoder_spec
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
    assert c.activation == tuned["activation"] == "tanh" and c.num_minibatches == tuned["num_minibatches"]
    assert PPOConfig.for_env("Pendulum-v1") == PPOConfig()


def _hidden(agent: PPO, net: str = "actor") -> list[nn.Module]:
    return list(agent.nets[net].net.encoder.body.body if net == "actor"
                else agent.nets[net].encoder.body.body)


def test_default_activation_is_still_relu():
    agent = PPO("CartPole-v1", num_envs=2, device="cpu")
    assert PPOConfig().activation == "relu" and "activation" not in agent.encoder_spec
    assert [type(m) for m in _hidden(agent)] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]


def test_tanh_activation_swaps_relu_and_initialises_orthogonally():
    agent = PPO("CartPole-v1", num_envs=2, device="cpu", activation="tanh")
    assert agent.encoder_spec["activation"] == "tanh"
    for net in ("actor", "critic"):
        layers = _hidden(agent, net)
        assert [type(m) for m in layers] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh]
        for lin in layers[::2]:
            w = lin.weight.detach()  # (64, in): orthonormal columns scaled by sqrt(2)
            torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(w.shape[1]), atol=1e-4, rtol=0)
            assert torch.count_nonzero(lin.bias) == 0
    obs = torch.randn(5, 4)
    h = agent.nets["actor"].net.encoder(obs)
    assert h.abs().max() < 1.0 and (h < 0).any()  # tanh outputs, not ReLU's


def test_tanh_activation_survives_save_and_load(tmp_path):
    agent = PPO("CartPole-v1", num_envs=2, device="cpu", activation="tanh", seed=3)
    agent.learn(64)
    agent.save(tmp_path / "m")
    back = PPO.load(tmp_path / "m", device="cpu")
    assert back.config.activation == "tanh" and isinstance(_hidden(back)[1], nn.Tanh)
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs)[0], back.predict(obs)[0])


def test_a_spec_without_activation_reads_as_relu():
    spec = encoder_spec(4, None, "mlp", 8, 2, 3)
    assert "activation" not in spec  # as in checkpoints written before the option
    assert isinstance(Encoder(spec).body.body[1], nn.ReLU)


@pytest.mark.parametrize("bad, match", [
    ({"activation": "gelu"}, "activation must be one of"),
    ({"activation": "tanh", "backbone": "lstm"}, "mlp backbone only"),
    ({"activation": "tanh", "pretrained": "some/forecaster"}, "mlp backbone only"),
])
def test_bad_activation_settings_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**bad)
    if bad.get("backbone") == "lstm":
        with pytest.raises(ValueError, match="mlp backbone only"):
            encoder_spec(10, None, "lstm", 8, 1, 3, activation="tanh")
