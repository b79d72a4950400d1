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


# ------------------------------------------------------------------ DQN's MLP update
def _dqn_pair(**kw):
    """Two identical DQNs with a filled replay buffer and equal generators."""
    import copy

    from stockgym.agents import DQN

    a = DQN("CartPole-v1", seed=0, device="cpu", learning_starts=0, num_envs=4, **kw)
    a.learn(400)
    b = copy.deepcopy(a)
    a.generator.manual_seed(7)
    b.generator.manual_seed(7)
    return a, b


@pytest.mark.parametrize("kw", [
    {},
    {"activation": "tanh", "num_layers": 3, "double_dqn": False},
    {"tau": 0.3, "max_grad_norm": None, "hidden_size": 16},
    {"max_grad_norm": 0.01},  # clipping active on every update
])
def test_dqn_written_out_backward_equals_autograd(kw):
    a, b = _dqn_pair(**kw)
    assert a._mlp is not None
    before = a.gradient_updates
    for _ in range(25):
        td_a, q_a = a._gradient_step(a.replay)  # autograd
        td_b, q_b = b._gradient_step_mlp(b.replay)  # written-out backward
    torch.testing.assert_close(td_a, td_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q_a, q_b, rtol=1e-5, atol=1e-6)
    for (name, pa), pb in zip(a.nets.named_parameters(), b.nets.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    assert a.gradient_updates == b.gradient_updates == before + 25


def test_numpy_mlp_matches_autograd():
    from stockgym.agents import numpy_mlp

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    layers = [(net[0], "tanh"), (net[2], "relu"), (net[4], None)]
    arrays = numpy_mlp.mlp_arrays(layers)
    x = torch.randn(6, 3)
    w = torch.randn(4, 2)
    out = net(x)
    (out[:4] * w).sum().backward()  # rows 4-5 take part in the forward only
    hs = numpy_mlp.forward(arrays, x.numpy())
    torch.testing.assert_close(torch.from_numpy(hs[-1]), out.detach())
    expected = [t.grad for m in (net[0], net[2], net[4]) for t in (m.weight, m.bias)]
    grads = [np.full(tuple(e.shape), np.nan, dtype=np.float32) for e in expected]
    numpy_mlp.backward(arrays, hs, w.numpy(), grads)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), e)
    # the arrays are the parameters' memory: an in-place step is seen at once
    before = arrays[2][0].copy()
    with torch.no_grad():
        net[4].weight.mul_(2.0)
    np.testing.assert_array_equal(arrays[2][0], 2.0 * before)
    # by hand: one relu unit, y = relu(2x - 1), x = (1, 0.25): dy/dw = x where 2x - 1 > 0
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(2.0)
        lin.bias.fill_(-1.0)
    g = [np.zeros((1, 1), np.float32), np.zeros(1, np.float32)]
    arr = numpy_mlp.mlp_arrays([(lin, "relu")])
    numpy_mlp.backward(arr, numpy_mlp.forward(arr, np.array([[1.0], [0.25]], np.float32)),
                       np.ones((2, 1), np.float32), g)
    assert g[0].item() == 1.0 and g[1].item() == 1.0  # only x = 1 is past the hinge


def test_numpy_mlp_only_for_cpu_float32():
    from stockgym.agents import numpy_mlp

    lin = nn.Linear(3, 2)
    assert numpy_mlp.mlp_arrays([(lin, None)]) is not None
    assert numpy_mlp.mlp_arrays([(lin.double(), None)]) is None
    assert numpy_mlp.mlp_arrays(None) is None


def test_dqn_mlp_path_only_for_plain_mlps():
    from stockgym.agents import DQN
    from stockgym.data import load_prices
    from stockgym.envs import StockTradingEnv

    assert DQN("CartPole-v1", device="cpu")._mlp is not None
    prices = load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=120, seed=0)
    env = StockTradingEnv(prices, window_size=5)
    assert DQN(env, device="cpu")._mlp is None  # stockgym layout: autograd path


def test_fused_adam_shortcut_equals_optimizer_step():
    from stockgym.agents.common import fused_adam_step

    torch.manual_seed(0)
    p1 = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    p2 = [nn.Parameter(t.detach().clone()) for t in p1]
    o1 = torch.optim.Adam(p1, lr=1e-2, eps=1e-5, fused=True)
    o2 = torch.optim.Adam(p2, lr=1e-2, eps=1e-5, fused=True)
    for k in range(6):
        g = [torch.randn_like(t) for t in p1]
        for a, b, gg in zip(p1, p2, g, strict=True):
            a.grad, b.grad = gg.clone(), gg.clone()
        o1.step()
        took = fused_adam_step(o2)
        assert took == (k > 0)  # the first step (no state yet) is left to optimizer.step
        if not took:
            o2.step()
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b)
    # the state stays PyTorch's: a fresh optimizer loads it and steps on equally
    o3 = torch.optim.Adam(p2, lr=1e-2, eps=1e-5, fused=True)
    o3.load_state_dict(o2.state_dict())
    assert all(float(st["step"]) == 6 for st in o3.state.values())
    # a parameter's first gradient leaves the step to optimizer.step(), which must then
    # count every parameter's step once (the shortcut shares one step counter)
    p3 = nn.Parameter(torch.randn(2))
    o2.add_param_group({"params": [p3]})
    p3.grad = torch.randn(2)
    assert not fused_adam_step(o2)
    o2.step()
    assert [float(o2.state[p]["step"]) for p in (*p2, p3)] == [7.0, 7.0, 1.0]
    # not for other optimizers or options
    assert not fused_adam_step(torch.optim.Adam(p1, lr=1e-2, foreach=True))
    assert not fused_adam_step(torch.optim.AdamW(p1, lr=1e-2, fused=True))


def test_clip_grad_norm_equals_torch():
    from stockgym.agents.common import clip_grad_norm

    torch.manual_seed(0)
    p1 = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
    p2 = [nn.Parameter(t.detach().clone()) for t in p1]
    for a, b in zip(p1, p2, strict=True):
        a.grad = torch.randn_like(a) * 10
        b.grad = a.grad.clone()
    nn.utils.clip_grad_norm_(p1, 1.0)
    clip_grad_norm(p2, 1.0)
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_dqn_for_env_gives_the_tuned_defaults_then_overrides():
    from stockgym.agents.dqn import ENV_DEFAULTS as DQN_DEFAULTS
    from stockgym.agents.dqn import DQNConfig

    c = DQNConfig.for_env("CartPole-v1", learning_rate=1e-4)
    for k, v in DQN_DEFAULTS["CartPole-v1"].items():
        if k != "learning_rate":
            assert getattr(c, k) == v
    assert c.learning_rate == 1e-4
    assert DQNConfig.for_env("Acrobot-v1") == DQNConfig()


# ------------------------------------------------------------------ PPO's MLP minibatch step
@pytest.mark.parametrize("kw", [
    {},  # CartPole's tuned defaults: tanh, no value clipping
    {"activation": "relu", "clip_vloss": True, "ent_coef": 0.05, "norm_adv": False},
    {"clip_vloss": True, "max_grad_norm": None, "hidden_size": 16, "num_layers": 3},
    {"max_grad_norm": 0.01, "clip_coef": 0.05},  # clipping active on every step
])
def test_ppo_numpy_minibatch_step_equals_autograd(kw):
    import copy

    a = PPO("CartPole-v1", PPOConfig.for_env("CartPole-v1", seed=0, device="cpu", **kw))
    a.learn(2048)
    assert a._np_actor is not None
    b = copy.deepcopy(a)  # binds views of its own parameters
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(64, 4, generator=g)
    raw = torch.randint(0, 2, (64,), generator=g)
    with torch.no_grad():
        logp, _ = a._evaluate(obs, raw)
        old_value = a.value(obs)
    # old log-probs and values spread across the clip ranges; advantages of both signs
    old_logp = logp + 0.3 * torch.randn(64, generator=g)
    old_value = old_value + 0.5 * torch.randn(64, generator=g)
    adv, ret = torch.randn(64, generator=g), torch.randn(64, generator=g)
    start = [t.detach().clone() for t in a.nets.parameters()]
    for k in range(6):
        diag = k % 2 == 1  # without diagnostics the losses are not computed, the step is
        la = a._minibatch_autograd(obs, raw, old_logp, adv, old_value, ret, diag)
        lb = b._minibatch_mlp(obs, raw, old_logp, adv, old_value, ret, diag)
        for x, y in zip(la, lb, strict=True):
            if diag:
                torch.testing.assert_close(x.detach(), y, rtol=1e-4, atol=1e-5)
    for (name, pa), pb in zip(a.nets.named_parameters(), b.nets.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    moved = [not torch.equal(t, t0) for t, t0 in zip(a.nets.parameters(), start, strict=True)]
    assert sum(moved) >= 12  # both networks' chains (the encoder's unused head stays)


def test_ppo_numpy_path_only_for_discrete_plain_mlps():
    from stockgym.data import load_prices
    from stockgym.envs import StockTradingEnv

    assert PPO("CartPole-v1", device="cpu")._np_actor is not None
    assert PPO("Pendulum-v1", device="cpu")._np_actor is None  # Box actions
    prices = load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=120, seed=0)
    assert PPO(StockTradingEnv(prices, window_size=5), device="cpu")._np_actor is None
