""":class:`NumpyVectorEnv`: :class:`~stockgym.envs.VectorStockTradingEnv` as a plain
Gymnasium vector env - numpy in and out, ``NEXT_STEP`` autoreset - so Gymnasium's own
vector wrappers (``RecordEpisodeStatistics``, ``NormalizeObservation``,
``NormalizeReward``, ``FlattenObservation``, ``ClipAction``...) and CleanRL-style loops
work on it unmodified. It is what
``gym.make_vec("stockgym/StockTrading-v0", num_envs=N, vectorization_mode="vector_entry_point")``
returns; our agents and SB3 keep the torch tensor env.

Next-step autoreset: the step that ends env i returns its last observation with
``terminated`` / ``truncated``; the next step returns the first observation of its new
episode with reward 0, not done, and ignores env i's action (the torch env holds env i
for that step). The numbers are the torch env's otherwise.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from stockgym.envs.registry import env_data, portfolio_kwargs
from stockgym.envs.vector import VectorStockTradingEnv

#: per-step info keys passed on (numpy arrays, one row per env)
INFO_KEYS = ("portfolio_value", "cash", "position", "cost", "pnl")


class NumpyVectorEnv(gym.vector.VectorEnv):
    """``VectorStockTradingEnv(prices, num_envs, **env_kwargs)`` on the CPU with numpy in
    and out and next-step autoreset (module docstring). Picklable."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, prices: Any, num_envs: int, **env_kwargs: Any) -> None:
        self.venv = VectorStockTradingEnv(prices, num_envs, device="cpu", **env_kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self.venv.single_observation_space
        self.single_action_space = self.venv.single_action_space
        self.observation_space = self.venv.observation_space
        self.action_space = self.venv.action_space
        self.obs_layout = self.venv.obs_layout
        self._restart = np.zeros(num_envs, dtype=bool)
        self._first_obs: np.ndarray | None = None

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.venv.reset(seed=seed, options=options)
        self._restart[:] = False
        return obs.numpy().copy(), self._info(info, None)

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        act = np.asarray(actions)
        hold = self._restart.copy()
        if hold.any():  # their actions are ignored: give the env one it accepts
            act = act.copy()
            act[hold] = np.zeros_like(act[hold])
        obs, rew, term, trunc, info = self.venv.step(
            torch.as_tensor(act), hold=torch.as_tensor(hold)
        )
        obs = obs.numpy().copy()
        term, trunc = term.numpy().copy(), trunc.numpy().copy()
        done = term | trunc
        if done.any():  # next-step convention: the ending step shows the last observation
            obs[done] = info["final_obs"].numpy()[done]
        self._restart = done
        return obs, rew.numpy().astype(np.float64), term, trunc, self._info(info, done)

    def _info(self, info: dict[str, Any], done: np.ndarray | None) -> dict[str, Any]:
        src = info
        if done is not None and done.any():
            # rows of ended envs: their last step, not the next episode's start
            final = info["final_info"]
            src = {k: torch.where(torch.as_tensor(done).view(-1, *([1] * (info[k].dim() - 1))),
                                  final[k], info[k]) for k in INFO_KEYS}  # fmt: skip
        return {k: src[k].numpy().copy() for k in INFO_KEYS if k in src}

    def close_extras(self, **kwargs: Any) -> None:
        pass


def make_vec(num_envs: int = 1, **kwargs: Any) -> NumpyVectorEnv:
    """The ``vector_entry_point`` of ``stockgym/StockTrading-v0``: the keywords of
    :func:`~stockgym.envs.registry.env_data` (data, period, env options)."""
    kwargs.pop("max_episode_steps", None)
    prices, env_kwargs = env_data(**kwargs)
    return NumpyVectorEnv(prices, num_envs, **env_kwargs)


def make_portfolio_vec(num_envs: int = 1, **kwargs: Any) -> NumpyVectorEnv:
    """The ``vector_entry_point`` of ``stockgym/Portfolio-v0``."""
    return make_vec(num_envs, **portfolio_kwargs(kwargs))
