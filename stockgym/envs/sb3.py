"""Adapter: stable-baselines3 trains on :class:`VectorStockTradingEnv` as a ``VecEnv``.

numpy in, numpy out (SB3's convention): observations ``(N, D)`` float32, rewards
``(N,)`` float32, dones ``(N,)`` bool and one info dict per env. When env i's episode
ends, its info carries ``terminal_observation`` (the observation that ended it; the
returned observation is already the next episode's first), ``TimeLimit.truncated``
(True when the episode was cut by the end of data rather than ruin), ``episode``
(``r``, ``l``, ``t``) so SB3's logger reports episode returns, and ``portfolio_value``:
the value the episode ended with (from the vector env's ``final_info``; after the
same-step autoreset the env itself already holds the next episode's initial cash).

    from stable_baselines3 import PPO
    from stockgym.envs import VectorStockTradingEnv
    from stockgym.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(VectorStockTradingEnv(prices, num_envs=8, episode_length=250))
    PPO("MlpPolicy", venv).learn(10_000)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from stockgym.envs.vector import VectorStockTradingEnv


class SB3VecEnv(VecEnv):
    """Wrap a :class:`VectorStockTradingEnv` for stable-baselines3 (see module doc)."""

    def __init__(self, venv: VectorStockTradingEnv) -> None:
        self.venv = venv
        self.render_mode = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._t0 = time.time()

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        seeds = None if seed is None else list(self._seeds)
        options = self._options[0] or None
        obs, _ = self.venv.reset(seed=seeds, options=options)
        self._reset_seeds()
        self._reset_options()
        return obs.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        self.venv.check()  # SB3 reads everything back each step anyway
        done = (term | trunc).cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = info["final_obs"].cpu().numpy()
            trunc_np = trunc.cpu().numpy()
            ep_r = info["episode"]["r"].cpu().numpy()
            ep_l = info["episode"]["l"].cpu().numpy()
            value = info["final_info"]["portfolio_value"].double().cpu().numpy()
            elapsed = round(time.time() - self._t0, 6)
            for i in np.flatnonzero(done):
                infos[i] = {
                    "terminal_observation": final[i],
                    "TimeLimit.truncated": bool(trunc_np[i]),
                    "episode": {"r": float(ep_r[i]), "l": int(ep_l[i]), "t": elapsed},
                    "portfolio_value": float(value[i]),
                }
        return obs.cpu().numpy(), rew.cpu().numpy().astype(np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    # SB3 asks these of the sub-envs; all N envs share one configuration.
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = getattr(self.venv.template, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError("the vector env's sub-envs share one configuration; set it at build")

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        method = getattr(self.venv.template, method_name)
        return [method(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
