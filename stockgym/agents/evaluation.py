"""Playing a trained agent: :func:`evaluate_policy`, the returns of whole episodes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def evaluate_policy(
    agent: Any, env: Any, n_episodes: int = 10, seed: int = 0, deterministic: bool = True
) -> list[float]:
    """Returns of ``n_episodes`` episodes of a single Gymnasium env (or env id) played
    with ``agent.predict``; episode k is reset with ``seed + k``. A return is the plain
    sum of the episode's rewards, ``sum_t r_t``."""
    if isinstance(env, str):
        env = gym.make(env)
    returns = []
    for k in range(n_episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            action, _ = agent.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns
