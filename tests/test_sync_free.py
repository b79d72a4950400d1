"""The vector env and the training loops without host reads (issue 22): with
``host_checks=False`` (the default on CUDA) a step never reads the device back; the
action checks wait for ``check()``; the numbers still equal N single envs; a whole PPO /
A2C rollout reads nothing back per step (checked here on the CPU by counting Python's
tensor-to-host conversions; on a GPU, by ``torch.cuda.set_sync_debug_mode("error")``)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from vector_equivalence import KRX_RULES, krx_synth, run_equivalence, synth

from stockgym.agents import A2C, DQN, PPO, REINFORCE
from stockgym.agents.monitor import EpisodeStats
from stockgym.data import load_prices
from stockgym.envs import VectorStockTradingEnv

# The Python-level ways a tensor is read back to the host.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_reads():
    """Count calls of :data:`HOST_READS` on any tensor while the block runs."""
    calls: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            calls.append(name)
            return fn(self, *args, **kwargs)

        return counted

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize(
    "kw",
    [
        dict(action_type="continuous", allow_short=True, borrow_rate=0.05, fill="close"),
        dict(action_type="continuous", min_commission=5.0, initial_cash=3_000.0),
        dict(reward="differential_sharpe", ruin_floor=9.9e6, allow_short=True, max_gross=3.0),
    ],
    ids=["short-borrow-close", "min-commission-bisected", "multidiscrete-dsr-ruin"],
)
def test_without_host_checks_equals_single_envs(kw):
    # whole-data episodes: the starts are given, so N single envs are the reference
    seen = run_equivalence(
        synth(3, n_days=90, seed=3), n_steps=120, window_size=5, venv_kw={"host_checks": False},
        **kw,
    )  # fmt: skip
    assert seen["ends"] >= 4 and not seen["env"].host_checks


def test_without_host_checks_equals_single_envs_under_krx_rules():
    seen = run_equivalence(
        krx_synth(n_days=150), n_steps=200, window_size=5, initial_cash=1e8,
        action_type="continuous", venv_kw={"host_checks": False}, **KRX_RULES,
    )  # fmt: skip
    assert seen["ends"] >= 4 and seen["limit_locked"] > 0 and seen["capped"] > 0


def test_a_step_reads_nothing_back_and_bad_actions_wait_for_check():
    prices = synth(1)
    env = VectorStockTradingEnv(prices, 8, window_size=5, episode_length=10, host_checks=False)
    env.reset(seed=0)
    acts = torch.ones(8, dtype=torch.int64)
    with count_host_reads() as reads:
        for _ in range(25):  # several episodes end (autoresets) on the way
            obs, rew, term, trunc, info = env.step(acts)
    assert reads == []
    assert info["_final_obs"].dtype == torch.bool and "final_info" in info
    env.step(torch.full((8,), 7))  # outside Discrete(2): not read yet
    with pytest.raises(ValueError, match="outside the action space"):
        env.check()
    env.check()  # reported once


def test_random_starts_on_the_device_are_reproducible_and_resume_exactly():
    prices = synth(1)

    def run(env, steps):
        return [env.step(torch.ones(4, dtype=torch.int64))[4]["t"].clone() for _ in range(steps)]

    a = VectorStockTradingEnv(prices, 4, window_size=5, episode_length=7, host_checks=False)
    b = VectorStockTradingEnv(prices, 4, window_size=5, episode_length=7, host_checks=False)
    a.reset(seed=3), b.reset(seed=3)
    ta = run(a, 20)
    assert all(torch.equal(x, y) for x, y in zip(ta, run(b, 20), strict=True))
    starts = {int(t) for x in ta for t in x}
    assert len(starts) > 8  # random starts, not one fixed bar
    saved = a.state_dict()
    c = VectorStockTradingEnv(prices, 4, window_size=5, episode_length=7, host_checks=False)
    c.load_state_dict(saved)
    assert all(torch.equal(x, y) for x, y in zip(run(a, 15), run(c, 15), strict=True))


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_a_rollout_reads_nothing_back_per_step(algo):
    prices = load_prices("X", source="synthetic", kind="edge", n_days=300)
    env = VectorStockTradingEnv(prices, 8, window_size=5, episode_length=10, host_checks=False)
    agent = algo(env, num_steps=16, hidden_size=16, seed=0)
    agent.learn(8 * 16)  # builds everything; one update
    reads_per_rollout = []
    for _ in range(2):
        buf = agent.new_buffer() if hasattr(agent, "new_buffer") else None
        if buf is None:
            pytest.fail("the agent has no new_buffer(); the test needs its rollout buffer")
        obs = agent._reset_env()
        stats = EpisodeStats(8, agent.device)
        with count_host_reads() as reads:
            agent.rollout(buf, obs, stats)
        reads_per_rollout.append(len(reads))
    # 16 steps, several episode ends: the only host reads are the once-per-rollout
    # drain of finished episodes and the action check (a handful, not per step)
    assert max(reads_per_rollout) <= 4, reads_per_rollout


def test_reinforce_collects_a_batch_with_a_handful_of_host_reads():
    prices = load_prices("X", source="synthetic", kind="edge", n_days=300)
    env = VectorStockTradingEnv(prices, 8, window_size=5, episode_length=10, host_checks=False)
    agent = REINFORCE(env, hidden_size=16, seed=0)
    agent.learn(100)
    with count_host_reads() as reads:
        batch = agent._collect(EpisodeStats(8, agent.device))
    assert batch["obs"].shape[0] == 10  # one episode of 10 steps per env
    # one "all ended?" read at the horizon, the step count, the episodes: not per step
    assert len(reads) <= 6, reads


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("algo", [PPO, A2C, DQN])
def test_cuda_rollout_under_sync_debug_mode_error(algo):
    prices = load_prices("X", source="synthetic", kind="edge", n_days=300)
    env = VectorStockTradingEnv(prices, 64, device="cuda", window_size=5, episode_length=10)
    assert not env.host_checks  # the default on CUDA
    agent = algo(env, hidden_size=16, seed=0)
    agent.learn(64 * 32)
    if algo is DQN:
        env.reset(seed=1)
        acts = torch.zeros(64, dtype=torch.int64, device="cuda")
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(30):
                env.step(acts)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return
    buf, obs = agent.new_buffer(), agent._reset_env()
    stats = EpisodeStats(64, agent.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in range(buf.obs.shape[0]):  # the rollout's steps, without the final drain
            with torch.no_grad():
                params, _ = agent.policy_and_value(obs)
                raw, _ = agent.nets["actor"].sample(params, agent.generator)
                step = agent.env.step(agent.dist.to_env(raw))
                stats.update(step, t)
                obs = step.obs
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.isfinite(stats.ret.cpu().numpy()).all()
