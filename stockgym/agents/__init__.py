"""Reinforcement-learning agents in PyTorch: :class:`DQN`, :class:`PPO`, :class:`REINFORCE`,
:class:`A2C` and tabular :class:`QLearning` (a teaching baseline).

The shape stable-baselines3 users know::

    agent = PPO(env, config)          # config: PPOConfig, a dict or None; or keyword overrides
    agent.learn(total_timesteps)
    action, _ = agent.predict(obs, deterministic=True)
    agent.save(dir)
    agent = PPO.load(dir, env=None)

``env``: a :class:`~stockgym.envs.VectorStockTradingEnv` (trained natively on its torch
device), any Gymnasium env or vector env with a Box observation, or an env id such as
``"CartPole-v1"``. Backbones ``mlp | cnn | lstm | gru | tcn | transformer`` come
from :mod:`stockgym.forecasters`.
Whole experiments into run directories: :mod:`stockgym.experiment` (``train(config)``).
:mod:`stockgym.agents.sb3` puts our backbones into stable-baselines3 (:class:`StockFeatures`)
and gives SB3's PPO / DQN / A2C models our agents' face (:class:`SB3Agent`), so runs train
them like ours (``algo = "sb3-ppo"``...).

Names are imported lazily, so ``import stockgym.agents`` costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Agent": "base",
    "load_agent": "base",
    "CommonConfig": "config",
    "evaluate_policy": "evaluation",
    "DQN": "dqn",
    "DQNConfig": "dqn",
    "PPO": "ppo",
    "PPOConfig": "ppo",
    "REINFORCE": "reinforce",
    "REINFORCEConfig": "reinforce",
    "A2C": "a2c",
    "A2CConfig": "a2c",
    "QLearning": "qlearning",
    "QLearningConfig": "qlearning",
    # stable-baselines3 (the [sb3] extra): extractors over our backbones, sb3-* runs
    "StockFeatures": "sb3",
    "MLPFeatures": "sb3",
    "CNNFeatures": "sb3",
    "LSTMFeatures": "sb3",
    "SB3Agent": "sb3",
    "load_sb3": "sb3",
    "stock_policy_kwargs": "sb3",
}

__all__ = sorted([*_NAMES, "ALGOS"])


def __getattr__(name: str) -> Any:
    if name == "ALGOS":
        value: Any = {
            "dqn": __getattr__("DQN"),
            "ppo": __getattr__("PPO"),
            "reinforce": __getattr__("REINFORCE"),
            "a2c": __getattr__("A2C"),
            "qlearning": __getattr__("QLearning"),
        }
    else:
        module = _NAMES.get(name)
        if module is None:
            raise AttributeError(f"module 'stockgym.agents' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"stockgym.agents.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
