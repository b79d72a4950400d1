"""Each agent solves CartPole-v1 within a CI-sized budget, as the well-known reference
implementations do: PPO reaches an average deterministic evaluation return >= 475, DQN
and REINFORCE >= 195 (10 evaluation episodes on seeds the training never used).

Training stops early once a periodic evaluation (other seeds again) clears a higher bar;
the budget is the most steps a run may take (DQN in particular peaks early and then
oscillates on CartPole, with our implementation as with stable-baselines3's).
Hyperparameters follow the rl-baselines3-zoo CartPole settings, scaled to 2 CPU cores;
the seed is fixed, and ``benchmarks/bench_agents.py --cartpole`` runs more seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stockgym.agents import DQN, PPO, REINFORCE
from stockgym.agents.evaluation import evaluate_policy

ENV = "CartPole-v1"
RUN = dict(seed=0, device="cpu", threads=1)
#: algo -> (class, hyperparameters, train_until arguments, pass mark)
CONFIGS = {
    "ppo": (
        PPO,
        dict(
            num_envs=8,
            num_steps=32,
            num_minibatches=1,
            update_epochs=10,
            learning_rate=2e-3,
            gamma=0.98,
            gae_lambda=0.8,
            **RUN,
        ),
        dict(budget=120_000, every=8192, stop_at=495),
        475,
    ),
    # DQN: rl-baselines3-zoo's CartPole learning rate, target copies every 128 updates
    # and one update per 2 env steps (8 envs); it climbs in jumps and falls back, so it
    # stops only on a perfect evaluation (10 x 500), after 14k-32k steps on seeds 0-2.
    "dqn": (
        DQN,
        dict(
            num_envs=8,
            learning_rate=2.3e-3,
            batch_size=128,
            buffer_size=50_000,
            learning_starts=1000,
            train_frequency=2,
            gradient_steps=1,
            target_update_interval=128,
            exploration_fraction=0.16,
            end_e=0.04,
            **RUN,
        ),
        dict(budget=50_000, every=2000, stop_at=500, episodes=10),
        195,
    ),
    "reinforce": (
        REINFORCE,
        dict(num_envs=8, learning_rate=1e-2, gamma=0.99, **RUN),
        dict(budget=100_000, every=5000, stop_at=300),
        195,
    ),
}


MAX_RETURN = 500.0  # CartPole-v1 truncates episodes at 500 steps


def reaches(agent, episodes: int, stop_at: float, seed: int) -> bool:
    """Whether ``episodes`` deterministic episodes (seeds ``seed, seed + 1, ...``) average
    at least ``stop_at``; stops playing as soon as the average can no longer get there
    (the same answer as playing them all, in less time)."""
    total = 0.0
    for k in range(episodes):
        total += evaluate_policy(agent, ENV, 1, seed=seed + k)[0]
        if total + (episodes - k - 1) * MAX_RETURN < stop_at * episodes:
            return False
    return True


def train_until(agent, budget: int, every: int, stop_at: float, episodes: int = 5) -> int:
    """Learn up to ``budget`` steps, stopping once an evaluation of ``episodes`` episodes
    (seeds from 1000 on) averages ``stop_at``; returns the steps taken."""
    mark = [every]

    def check(a, step):
        if step < mark[0]:
            return None
        mark[0] = step + every
        return False if reaches(a, episodes, stop_at, seed=1000 + step) else None

    agent.learn(budget, callback=check)
    return agent.num_timesteps


def final_score(agent) -> float:
    return float(np.mean(evaluate_policy(agent, ENV, 10, seed=0)))


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(CONFIGS))
def test_solves_cartpole(algo):
    cls, kwargs, until, pass_mark = CONFIGS[algo]
    before = torch.get_num_threads()
    try:
        agent = cls(ENV, **kwargs)
        steps = train_until(agent, **until)
        score = final_score(agent)
    finally:
        torch.set_num_threads(before)
    assert score >= pass_mark, f"{algo}: {score} after {steps} steps"
