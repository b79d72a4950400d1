"""PPO's and REINFORCE's shared encoder (actor and critic read one backbone through two
heads) and the bfloat16 autocast option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stockgym.agents import PPO, REINFORCE
from stockgym.agents.base import Agent
from stockgym.agents.networks import Net
from stockgym.data import load_prices
from stockgym.envs import VectorStockTradingEnv


@pytest.fixture(scope="module")
def prices():
    return load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=200, seed=0)


def venv(prices, n=4, window=6):
    return VectorStockTradingEnv(prices, n, window_size=window, episode_length=20)


@pytest.mark.parametrize("backbone", ["mlp", "cnn", "lstm"])
def test_stock_env_shares_one_encoder_and_both_losses_train_it(prices, backbone):
    agent = PPO(
        venv(prices), backbone=backbone, num_layers=1, hidden_size=8, device="cpu", num_steps=8
    )
    actor, critic = agent.nets["actor"], agent.nets["critic"]
    assert isinstance(critic, nn.Sequential)  # a head only: no backbone of its own
    obs = agent.env.reset(seed=0)
    params, value = agent.policy_and_value(obs)
    z = actor.net.encoder(obs)
    torch.testing.assert_close(params, actor.net.head(z))
    torch.testing.assert_close(value, critic(z).squeeze(-1))
    value.sum().backward()  # the value loss alone reaches the shared backbone
    grads = [
        p.grad for n, p in actor.net.encoder.body.named_parameters() if not n.startswith("head")
    ]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    agent.nets.zero_grad(set_to_none=True)
    agent.learn(64)


def test_separate_on_request_and_on_plain_vectors(prices):
    agent = PPO(venv(prices), shared_encoder=False, device="cpu", num_steps=8)
    assert isinstance(agent.nets["critic"], Net)
    assert agent.nets["critic"].encoder is not agent.nets["actor"].net.encoder
    assert isinstance(PPO("CartPole-v1", num_envs=2, device="cpu").nets["critic"], Net)
    shared = PPO("CartPole-v1", num_envs=2, device="cpu", shared_encoder=True)
    assert isinstance(shared.nets["critic"], nn.Sequential)
    shared.learn(64)
    with pytest.raises(ValueError, match="shared_encoder must be"):
        PPO("CartPole-v1", shared_encoder="yes")


def test_checkpoint_of_separate_networks_loads_with_shared_encoder_false(prices, tmp_path):
    agent = PPO(venv(prices), shared_encoder=False, device="cpu", num_steps=8)
    agent.learn(32)
    ckpt = agent.checkpoint()
    del ckpt["config"]["shared_encoder"]  # as written before the option existed
    with pytest.raises(ValueError, match="weights do not fit"):
        Agent.from_checkpoint(ckpt, venv(prices), device="cpu")
    back = Agent.from_checkpoint(ckpt, venv(prices), device="cpu", shared_encoder=False)
    obs = agent.env.reset(seed=1)
    torch.testing.assert_close(back.predict(obs)[0], agent.predict(obs)[0])


def test_reinforce_baseline_shares_the_policy_backbone(prices):
    agent = REINFORCE(
        venv(prices),
        backbone="cnn",
        num_layers=1,
        hidden_size=8,
        device="cpu",
        max_episode_steps=10,
    )
    assert isinstance(agent.nets["critic"], nn.Sequential)
    agent.learn(40)
    assert "critic" not in REINFORCE(venv(prices), baseline="mean", device="cpu").nets


@pytest.mark.parametrize("algo", [PPO, REINFORCE])
def test_bfloat16_autocast_keeps_float32_parameters_and_outputs(prices, algo):
    kw = {"num_steps": 8} if algo is PPO else {"max_episode_steps": 10}
    a = algo(
        venv(prices),
        backbone="lstm",
        num_layers=1,
        hidden_size=8,
        device="cpu",
        precision="bfloat16",
        seed=3,
        **kw,
    )
    b = algo(venv(prices), backbone="lstm", num_layers=1, hidden_size=8, device="cpu", seed=3, **kw)
    obs = a.env.reset(seed=0)
    pa, va = a.policy_and_value(obs) if algo is PPO else (a._params(obs), a.value(obs))
    pb, vb = b.policy_and_value(obs) if algo is PPO else (b._params(obs), b.value(obs))
    assert pa.dtype == va.dtype == torch.float32
    assert not torch.equal(va, vb)  # bfloat16 did run
    torch.testing.assert_close(va, vb, atol=0.05, rtol=0.05)
    torch.testing.assert_close(pa, pb, atol=0.01, rtol=0.05)
    a.learn(64)
    assert all(p.dtype == torch.float32 for p in a.nets.parameters())
    with pytest.raises(ValueError, match="precision must be one of"):
        algo(venv(prices), precision="float16")
