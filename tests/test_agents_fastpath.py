"""What every agent's one update path rests on: env ids become same-step-autoreset
vector envs, the optimizer is PyTorch's own Adam (fused kernel where the device has one,
else foreach) and ``Agent._optimizer_step`` is ``clip_grad_norm_`` then
``optimizer.step()``; plus the tuned per-env defaults (``*Config.for_env``) and the mlp
backbone's ``activation`` option, which those defaults use."""

from __future__ import annotations

import copy
import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from stockgym.agents import DQN, PPO, REINFORCE
from stockgym.agents.base import make_adam
from stockgym.agents.dqn import ENV_DEFAULTS as DQN_DEFAULTS
from stockgym.agents.dqn import DQNConfig
from stockgym.agents.networks import Encoder, encoder_spec
from stockgym.agents.ppo import ENV_DEFAULTS, PPOConfig


def test_an_env_id_becomes_a_same_step_sync_vector_env():
    agent = PPO("CartPole-v1", num_envs=3, device="cpu")
    env = agent.env.env
    assert isinstance(env, gym.vector.SyncVectorEnv) and agent.env.num_envs == 3
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    agent.learn(64)
    assert agent.num_timesteps >= 64


@pytest.mark.parametrize(
    "cls, kw", [(DQN, {}), (PPO, {}), (REINFORCE, {}), (DQN, {"weight_decay": 0.01})]
)
def test_every_agent_steps_torch_adam_with_the_fused_kernel_on_cpu(cls, kw):
    agent = cls("CartPole-v1", num_envs=2, device="cpu", **kw)
    opt = agent.optimizer
    assert type(opt) is (torch.optim.AdamW if kw else torch.optim.Adam)
    assert all(g["fused"] is True and not g["foreach"] for g in opt.param_groups)
    assert all(
        g["eps"] == 1e-5 and g["weight_decay"] == kw.get("weight_decay", 0.0)
        for g in opt.param_groups
    )
    # it updates exactly the trained parameters (DQN: the online network, not the target)
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in agent.params]
    if cls is DQN:
        assert {id(p) for p in agent.params} == {id(p) for p in agent.nets["q"].parameters()}


def test_adam_falls_back_to_foreach_where_there_is_no_fused_kernel():
    params = [nn.Parameter(torch.randn(3, dtype=torch.float64))]  # not float32
    opt = make_adam(params, 1e-3)
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["foreach"] is True and not opt.param_groups[0]["fused"]


def test_fused_and_foreach_adam_compute_the_same_update():
    torch.manual_seed(0)
    p1 = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    p2 = [nn.Parameter(t.detach().clone()) for t in p1]
    fused = make_adam(p1, 1e-2)
    foreach = torch.optim.Adam(p2, lr=1e-2, eps=1e-5, foreach=True)
    for _ in range(5):
        for a, b in zip(p1, p2, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        foreach.step()
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b)


def test_optimizer_step_clips_the_global_norm_then_steps():
    agent = REINFORCE("CartPole-v1", num_envs=2, device="cpu", learning_rate=0.1)
    twin = copy.deepcopy(agent)
    grads = [torch.full_like(p, 3.0) for p in agent.params]  # norm far above 0.5
    for a, b, g in zip(agent.params, twin.params, grads, strict=True):
        a.grad, b.grad = g.clone(), g.clone()
    agent._optimizer_step(0.5)
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in agent.params])
    )
    assert norm.item() == pytest.approx(0.5, rel=1e-4)  # the clipped gradients it stepped on
    # by hand: clip_grad_norm_ then Adam's step on a copy of the same agent
    nn.utils.clip_grad_norm_(twin.params, 0.5)
    twin.optimizer.step()
    for a, b in zip(agent.params, twin.params, strict=True):
        assert torch.equal(a, b)
    agent._zero_grad()
    assert all(p.grad is None for p in agent.params)


def test_a_checkpoint_with_one_shared_adam_step_counter_loads_into_separate_ones():
    agent = DQN("CartPole-v1", num_envs=2, device="cpu", learning_starts=100, batch_size=16)
    agent.learn(300)
    ckpt = agent.checkpoint()
    states = ckpt["optimizer"]["state"].values()
    shared = next(iter(states))["step"]
    for st in states:  # as agents saved before the plain optimizer.step() wrote them
        st["step"] = shared
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    loaded = DQN.from_checkpoint(
        torch.load(buf, weights_only=True), env="CartPole-v1", device="cpu", learning_starts=0
    )
    loaded.learn(100)
    steps = [float(st["step"]) for st in loaded.optimizer.state.values()]
    assert steps == [float(loaded.gradient_updates)] * len(steps)  # one count per update
    assert loaded.gradient_updates > agent.gradient_updates


def test_for_env_gives_the_tuned_defaults_then_overrides():
    c = PPOConfig.for_env("CartPole-v1", seed=7, learning_rate=1e-4)
    tuned = ENV_DEFAULTS["CartPole-v1"]
    assert c.num_envs == tuned["num_envs"] and c.update_epochs == tuned["update_epochs"]
    assert c.clip_vloss is tuned["clip_vloss"] and c.seed == 7 and c.learning_rate == 1e-4
    assert (
        c.activation == tuned["activation"] == "tanh"
        and c.num_minibatches == tuned["num_minibatches"]
    )
    assert PPOConfig.for_env("Pendulum-v1") == PPOConfig()


def _hidden(agent: PPO, net: str = "actor") -> list[nn.Module]:
    return list(
        agent.nets[net].net.encoder.body.body
        if net == "actor"
        else agent.nets[net].encoder.body.body
    )


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


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"activation": "gelu"}, "activation must be one of"),
        ({"activation": "tanh", "backbone": "lstm"}, "mlp backbone only"),
        ({"activation": "tanh", "pretrained": "some/forecaster"}, "mlp backbone only"),
    ],
)
def test_bad_activation_settings_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**bad)
    if bad.get("backbone") == "lstm":
        with pytest.raises(ValueError, match="mlp backbone only"):
            encoder_spec(10, None, "lstm", 8, 1, 3, activation="tanh")


def test_dqn_for_env_gives_the_tuned_defaults_then_overrides():
    c = DQNConfig.for_env("CartPole-v1", learning_rate=1e-4)
    for k, v in DQN_DEFAULTS["CartPole-v1"].items():
        if k != "learning_rate":
            assert getattr(c, k) == v
    assert c.learning_rate == 1e-4
    assert DQNConfig.for_env("Acrobot-v1") == DQNConfig()
