"""The agents' update maths against numbers worked out by hand: GAE with termination and
truncation, Monte-Carlo returns, the (Double-)DQN target, the PPO losses, the action
distributions (log-probs, entropies, sampling) and the replay buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from stockgym.agents.actor_critic import bootstrap_values
from stockgym.agents.buffers import ReplayBuffer
from stockgym.agents.dqn import dqn_target, polyak_update
from stockgym.agents.epsilon_greedy import linear_schedule
from stockgym.agents.networks import ActionDist
from stockgym.agents.ppo import compute_gae, ppo_losses
from stockgym.agents.reinforce import discounted_returns


def col(*xs: float) -> torch.Tensor:
    """A (T, 1) tensor: T steps of one env."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


# ------------------------------------------------------------------ GAE
# rewards 1, 2, 3; V(s0..s2) = 0.5, 1.0, 1.5; V(s3) = 2.0; gamma 0.9, lambda 0.8
# (gamma * lambda = 0.72)
R, V, LAST = col(1, 2, 3), col(0.5, 1.0, 1.5), torch.tensor([2.0])
G, L = 0.9, 0.8


def gae(terminated, truncated, final=0.0):
    final_values = col(0.0, final, 0.0)
    nv = bootstrap_values(V, LAST, terminated, truncated, final_values)
    return nv, *compute_gae(R, V, nv, terminated | truncated, G, L)


def test_gae_no_episode_end():
    nv, adv, ret = gae(flags(0, 0, 0), flags(0, 0, 0))
    # next values 1.0, 1.5, 2.0; deltas 1 + .9 - .5 = 1.4, 2 + 1.35 - 1 = 2.35, 3 + 1.8 - 1.5 = 3.3
    # A2 = 3.3; A1 = 2.35 + .72 * 3.3 = 4.726; A0 = 1.4 + .72 * 4.726 = 4.80272
    torch.testing.assert_close(nv, col(1.0, 1.5, 2.0))
    torch.testing.assert_close(adv, col(4.80272, 4.726, 3.3))
    torch.testing.assert_close(ret, col(5.30272, 5.726, 4.8))


def test_gae_termination_cuts_value_and_advantage():
    nv, adv, _ = gae(flags(0, 1, 0), flags(0, 0, 0))
    # step 1 terminates: next value 0, delta1 = 2 - 1 = 1, nothing flows back from step 2
    # (which belongs to the next episode): A1 = 1; A0 = 1.4 + .72 * 1 = 2.12; A2 = 3.3
    torch.testing.assert_close(nv, col(1.0, 0.0, 2.0))
    torch.testing.assert_close(adv, col(2.12, 1.0, 3.3))


def test_gae_truncation_bootstraps_from_final_observation():
    nv, adv, _ = gae(flags(0, 0, 0), flags(0, 1, 0), final=4.0)
    # step 1 is cut by a time limit; V(final_obs) = 4: delta1 = 2 + .9 * 4 - 1 = 4.6 = A1;
    # A0 = 1.4 + .72 * 4.6 = 4.712
    torch.testing.assert_close(nv, col(1.0, 4.0, 2.0))
    torch.testing.assert_close(adv, col(4.712, 4.6, 3.3))


def test_gae_lambda_one_is_discounted_return_minus_value():
    r = torch.rand(6, 3)
    v = torch.rand(6, 3)
    dones = torch.zeros(6, 3, dtype=torch.bool)
    dones[2, 0] = dones[4, 1] = True
    nv = bootstrap_values(v, torch.zeros(3), dones, torch.zeros_like(dones), torch.zeros_like(v))
    adv, ret = compute_gae(r, v, nv, dones, 0.95, 1.0)
    mc = discounted_returns(r, dones, 0.95)
    torch.testing.assert_close(ret, mc)
    torch.testing.assert_close(adv, mc - v)


# ------------------------------------------------------------------ Monte-Carlo returns
def test_discounted_returns_by_hand():
    r = col(1, 1, 1, 1)
    d = flags(0, 1, 0, 1)
    # two episodes of two steps, gamma .5: G = 1 + .5 * 1 = 1.5, then 1
    torch.testing.assert_close(discounted_returns(r, d, 0.5), col(1.5, 1.0, 1.5, 1.0))
    # the second episode truncated with V(final) = 2: G3 = 1 + .5 * 2 = 2, G2 = 1 + .5 * 2 = 2
    tail = col(0, 0, 0, 2)
    torch.testing.assert_close(discounted_returns(r, d, 0.5, tail), col(1.5, 1.0, 2.0, 2.0))


def test_discounted_returns_several_envs():
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    d = torch.tensor([[False, True], [False, False], [True, True]])
    out = discounted_returns(r, d, 0.9)
    expected = torch.tensor([[1 + 0.9 * 3 + 0.81 * 5, 2.0], [3 + 0.9 * 5, 4 + 0.9 * 6], [5.0, 6.0]])
    torch.testing.assert_close(out, expected)


# ------------------------------------------------------------------ DQN
@pytest.mark.parametrize("term_dtype", [torch.float32, torch.bool])
def test_double_dqn_target_by_hand(term_dtype):
    rewards = torch.tensor([1.0, 0.5, -1.0])
    terminated = torch.tensor([0.0, 1.0, 0.0]).to(term_dtype)  # the buffer stores 0/1
    online = torch.tensor([[3.0, 1.0], [2.0, 0.0], [0.0, 5.0]])  # picks 0, 0, 1
    target = torch.tensor([[10.0, 20.0], [30.0, 40.0], [7.0, -2.0]])
    # Double DQN: the online net picks, the target net values: 10, (terminated), -2
    y = dqn_target(rewards, terminated, target, 0.9, next_q_online=online)
    torch.testing.assert_close(y, torch.tensor([1 + 0.9 * 10, 0.5, -1 + 0.9 * -2]))
    # plain DQN: max of the target net: 20, (terminated), 7
    y = dqn_target(rewards, terminated, target, 0.9)
    torch.testing.assert_close(y, torch.tensor([1 + 0.9 * 20, 0.5, -1 + 0.9 * 7]))


def test_linear_schedule_by_hand():
    # epsilon from 1.0 to 0.1 over 100 steps: 0.55 halfway, 0.1 from step 100 on
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 100) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 100, 10**6) == linear_schedule(1.0, 0.1, 100, 100)
    assert linear_schedule(1.0, 0.1, 0, 0) == 0.1  # no exploration phase


def test_polyak_update():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    polyak_update(a, b, 0.25)
    torch.testing.assert_close(b.weight.detach(), 0.25 * wa + 0.75 * wb)
    polyak_update(a, b, 1.0)
    torch.testing.assert_close(b.weight.detach(), wa)


def test_replay_buffer_wraps_and_samples_with_the_generator():
    rb = ReplayBuffer(5, 2, torch.device("cpu"))
    for k in range(3):  # 3 batches of 2 transitions: the 6th overwrites the 1st
        obs = torch.full((2, 2), float(k))
        rb.add(
            obs,
            torch.tensor([k, k]),
            torch.tensor([1.0 * k, 1.0 * k]),
            obs + 1,
            torch.tensor([False, True]),
        )
    assert rb.size == 5 and rb.pos == 1
    assert rb.obs[0, 0] == 2.0 and rb.next_obs[0, 0] == 3.0 and rb.terminated[0] == 1.0
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = rb.sample(8, g1), rb.sample(8, g2)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    # a sample is a set of whole rows: obs, action, reward, next_obs stay together
    s_obs, s_act, s_rew, s_next, s_term = a
    assert torch.equal(s_obs[:, 0], s_act.float()) and torch.equal(s_obs[:, 0], s_rew)
    assert torch.equal(s_next, s_obs + 1)
    assert set(s_term.tolist()) <= {0.0, 1.0}


def test_dqn_checkpoint_can_carry_the_replay_buffer(tmp_path):
    from stockgym.agents import DQN
    from stockgym.agents.base import CHECKPOINT

    kw = dict(num_envs=2, buffer_size=50, learning_starts=10, batch_size=8, device="cpu")
    agent = DQN("CartPole-v1", save_replay_buffer=True, **kw)
    agent.learn(80)  # 40 vector steps x 2 envs: the 50-row buffer wrapped, writes at row 30
    rb = agent.replay
    assert (rb.size, rb.pos) == (50, 30)
    agent.save(tmp_path / "m")
    extra = torch.load(tmp_path / "m" / CHECKPOINT, weights_only=True)["extra"]
    assert extra["replay_buffer"]["pos"] == 30  # plain tensors and ints: the safe load reads it
    loaded = DQN.load(tmp_path / "m", env="CartPole-v1", device="cpu")
    lb = loaded.replay
    assert (lb.size, lb.pos, lb.capacity) == (rb.size, rb.pos, rb.capacity)
    for name in ReplayBuffer.FIELDS:
        assert torch.equal(getattr(lb, name), getattr(rb, name)), name
    assert lb.terminated.sum() > 0 and lb.actions.dtype == torch.int64
    loaded.learn(10)  # keeps learning in the loaded memory: 5 vector steps x 2 more rows
    assert loaded.replay is lb and (lb.size, lb.pos) == (50, 40)
    assert torch.equal(lb.obs[:30], rb.obs[:30]) and torch.equal(lb.obs[40:], rb.obs[40:])

    # a different buffer_size cannot hold the saved rows and write position
    with pytest.raises(ValueError, match="holds 50 transitions.*buffer_size is 60"):
        DQN.load(tmp_path / "m", env="CartPole-v1", device="cpu", buffer_size=60)
    # off (the default): the checkpoint has no buffer and a loaded agent starts a new one
    agent = DQN("CartPole-v1", **kw)
    agent.learn(20)
    agent.save(tmp_path / "n")
    extra = torch.load(tmp_path / "n" / CHECKPOINT, weights_only=True)["extra"]
    assert "replay_buffer" not in extra
    assert not hasattr(DQN.load(tmp_path / "n", env="CartPole-v1", device="cpu"), "replay")


# ------------------------------------------------------------------ PPO losses
def test_ppo_clipped_surrogate_by_hand():
    new = torch.log(torch.tensor([1.5, 1.5, 0.5]))
    old = torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 1.0])
    v = torch.zeros(3)
    out = ppo_losses(new, old, adv, v, v, v, torch.zeros(3), clip_coef=0.2, norm_adv=False)
    # ratio 1.5, A=+1: min(1.5, 1.2) = 1.2; ratio 1.5, A=-1: min(-1.5, -1.2) = -1.5;
    # ratio 0.5, A=+1: min(0.5, 0.8) = 0.5. Loss = -mean(1.2, -1.5, 0.5) = -0.0667
    assert out.policy.item() == pytest.approx(-(1.2 - 1.5 + 0.5) / 3)
    assert out.clipfrac.item() == pytest.approx(1.0)
    r = torch.tensor([1.5, 1.5, 0.5])
    assert out.approx_kl.item() == pytest.approx(float(((r - 1) - r.log()).mean()), rel=1e-6)


def test_ppo_value_clipping_by_hand():
    z = torch.zeros(1)
    new_v, old_v, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    out = ppo_losses(z, z, torch.ones(1), new_v, old_v, ret, z, 0.2, clip_vloss=True)
    # clipped value 0.2: max((1-2)^2, (0.2-2)^2) = 3.24, times 0.5
    assert out.value.item() == pytest.approx(1.62)
    out = ppo_losses(z, z, torch.ones(1), new_v, old_v, ret, z, 0.2, clip_vloss=False)
    assert out.value.item() == pytest.approx(0.5)


# ------------------------------------------------------------------ distributions
DEV = torch.device("cpu")


def test_categorical_log_prob_entropy_and_sampling():
    d = ActionDist(spaces.Discrete(3), DEV)
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(20_000, 1)
    ref = torch.distributions.Categorical(logits=logits[:1])
    a = torch.tensor([2])
    torch.testing.assert_close(d.log_prob(logits[:1], None, a), ref.log_prob(a))
    torch.testing.assert_close(d.entropy(logits[:1], None), ref.entropy())
    g = torch.Generator().manual_seed(0)
    s = d.sample(logits, None, g)
    freq = torch.bincount(s, minlength=3).float() / len(s)
    np.testing.assert_allclose(freq.numpy(), ref.probs[0].numpy(), atol=0.015)
    assert d.mode(logits[:1]).item() == 2


def test_multidiscrete_sums_independent_parts():
    d = ActionDist(spaces.MultiDiscrete([2, 3]), DEV)
    params = torch.tensor([[0.3, -0.2, 1.0, 0.0, -1.0]])
    a = torch.tensor([[1, 0]])
    c1 = torch.distributions.Categorical(logits=params[:, :2])
    c2 = torch.distributions.Categorical(logits=params[:, 2:])
    expected = c1.log_prob(a[:, 0]) + c2.log_prob(a[:, 1])
    torch.testing.assert_close(d.log_prob(params, None, a), expected)
    torch.testing.assert_close(d.entropy(params, None), c1.entropy() + c2.entropy())
    assert d.sample(params, None, torch.Generator()).shape == (1, 2)


def test_gaussian_box_log_prob_entropy_and_squashing():
    box = spaces.Box(0.0, 1.0, (2,), np.float32)
    d = ActionDist(box, DEV)
    mean = torch.tensor([[0.2, 1.5]])
    log_std = torch.tensor([-1.0, 0.5])
    u = torch.tensor([[0.0, 3.0]])
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(d.log_prob(mean, log_std, u), ref.log_prob(u).sum(-1))
    torch.testing.assert_close(d.entropy(mean, log_std), ref.entropy().sum(-1))
    # clip: samples outside the Box are clipped for the env; learning uses u itself
    torch.testing.assert_close(d.to_env(u), torch.tensor([[0.0, 1.0]]))
    t = ActionDist(box, DEV, squash="tanh")
    torch.testing.assert_close(t.to_env(torch.tensor([[0.0, -50.0]])), torch.tensor([[0.5, 0.0]]))
    with pytest.raises(ValueError, match="bounded Box"):
        ActionDist(spaces.Box(-np.inf, np.inf, (1,)), DEV, squash="tanh")


def test_discrete_with_start_offsets_env_actions():
    d = ActionDist(spaces.Discrete(3, start=-1), DEV)
    assert d.to_env(torch.tensor([0, 2])).tolist() == [-1, 1]


def test_gumbel_max_sampling_ignores_impossible_actions():
    d = ActionDist(spaces.Discrete(2), DEV)
    logits = torch.tensor([[0.0, -math.inf]]).repeat(1000, 1)
    assert (d.sample(logits, None, torch.Generator().manual_seed(1)) == 0).all()


def test_episode_stats_log_the_final_portfolio_value():
    """charts/portfolio_value is the value each episode ended with, not the next
    episode's starting cash (the same-step autoreset has already reset info)."""
    from stockgym.agents.monitor import EpisodeStats
    from stockgym.agents.vecenv import as_torch_vec_env
    from stockgym.data import load_prices
    from stockgym.envs import VectorStockTradingEnv

    prices = load_prices("X", source="synthetic", kind="edge", n_days=300)
    venv = VectorStockTradingEnv(prices, 4, window_size=5, episode_length=10)
    env = as_torch_vec_env(venv, torch.device("cpu"))
    stats = EpisodeStats(4, torch.device("cpu"))
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    finals = []
    for _ in range(25):
        step = env.step(torch.randint(0, 2, (4,), generator=gen))
        if step.final_obs is not None:
            done = step.done
            finals += step.info["final_info"]["portfolio_value"][done].tolist()
        stats.update(step, at=len(finals))
    assert len(stats.portfolio) == 0  # nothing read back until drained
    drained = stats.drain()
    assert [v for f in drained for v in f.values] == finals
    assert sum(f.count for f in drained) == len(finals)
    assert len(stats.portfolio) == len(finals) >= 8
    assert list(stats.portfolio) == finals
    assert all(v != venv.template.initial_cash for v in stats.portfolio)


def test_episode_stats_keep_exact_means_and_a_bounded_record():
    """More envs end on one step than the window keeps: the logged means are over all of
    them; the first ``window`` (env order) are kept one by one; nothing is lost."""
    from stockgym.agents.monitor import EpisodeStats
    from stockgym.agents.vecenv import Step

    n = 250
    stats = EpisodeStats(n, torch.device("cpu"), window=100)
    reward = torch.arange(n, dtype=torch.float32)
    done = torch.arange(n) % 5 != 0  # 200 of 250 end on the second step
    value = 1e6 + torch.arange(n, dtype=torch.float64)
    no = torch.zeros(n, dtype=torch.bool)
    obs = torch.zeros(n, 1)
    stats.update(Step(obs, reward, no, no, None, {}), at=1)
    info = {"final_info": {"portfolio_value": value}, "portfolio_value": value * 0}
    stats.update(Step(obs, reward, done, no, obs, info), at=2)
    (f,) = stats.drain()
    ended = torch.nonzero(done).squeeze(1)
    assert (f.at, f.count) == (2, 200) and stats.episodes == 200
    assert f.mean_return == pytest.approx(float((2 * reward[ended]).double().mean()))
    assert f.mean_length == 2.0
    assert f.mean_value == pytest.approx(float(value[ended].mean()))
    assert f.returns == (2 * reward[ended[:100]]).double().tolist()
    assert f.values == value[ended[:100]].tolist() and len(stats.recent) == 100
    assert stats.drain() == []


def test_reinforce_logs_the_value_episodes_ended_with():
    """REINFORCE's charts/portfolio_value is the final value of its episodes, not the
    next episode's starting cash (the same-step autoreset has already reset info)."""
    from stockgym.agents import REINFORCE
    from stockgym.data import load_prices
    from stockgym.envs import VectorStockTradingEnv

    prices = load_prices("X", source="synthetic", kind="edge", n_days=300)
    venv = VectorStockTradingEnv(prices, 4, window_size=5, episode_length=10)
    agent = REINFORCE(venv, hidden_size=8, seed=0)
    agent.learn(200)
    values = list(agent.logger.last and [agent.logger.last["charts/portfolio_value"]])
    assert values and all(v != venv.template.initial_cash for v in values)
