"""The env boundary of the training loops: :func:`as_torch_vec_env` turns whatever the user
passes into one small interface, :class:`TorchVecEnv`: ``reset(seed)`` -> ``obs``;
``step(actions)`` -> :class:`Step`, every tensor on the agent's device:

* :class:`~stockgym.envs.VectorStockTradingEnv` (or any Gymnasium ``VectorEnv`` that
  returns torch tensors with same-step autoreset): used as is. On the agent's device
  nothing is copied to the host during a rollout.
* a Gymnasium ``VectorEnv`` with numpy outputs and same-step autoreset
  (``gym.make_vec(id, n, vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})``):
  converted at the boundary (numpy -> tensor once per step).
* a single Gymnasium env: wrapped in a one-env ``SyncVectorEnv``.
* an env id string (``"CartPole-v1"``): ``gym.make_vec(id, num_envs)``, a
  ``SyncVectorEnv`` with same-step autoreset.

Observations must be a ``Box`` (flattened to ``(N, D)`` float32). Next-step autoreset
vector envs (Gymnasium's default for ``make_vec``) are refused with a hint: their
first step after an episode ends is not a real transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from stockgym.agents.spaces import describe_space
from stockgym.envs.vector import VectorStockTradingEnv


@dataclass
class Step:
    """One vector step: ``obs`` (N, D) float32 (already the next episode's first
    observation where an episode ended), ``reward`` (N,) float32, ``terminated`` /
    ``truncated`` (N,) bool, ``final_obs`` (N, D) or ``None`` when no episode ended
    (rows valid where ``terminated | truncated``), ``info`` the env's info dict."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor | None
    info: dict[str, Any]

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


class TorchVecEnv:
    """The interface the training loops use (see the module docstring)."""

    num_envs: int
    single_observation_space: spaces.Box
    single_action_space: spaces.Space
    device: torch.device
    env: Any  # what the user passed (or what was made from it)
    native: bool  # True when the env itself speaks torch

    def reset(self, seed: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, actions: torch.Tensor) -> Step:
        raise NotImplementedError

    def check(self) -> None:
        """Raise on bad actions an env checks lazily (see
        :meth:`VectorStockTradingEnv.check`); the loops call it once per update."""

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.single_observation_space.shape))


class _TorchNative(TorchVecEnv):
    """A vector env that already returns torch tensors (e.g. VectorStockTradingEnv)."""

    native = True

    def __init__(self, env: Any, device: torch.device) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.device = device
        self._inference = isinstance(env, VectorStockTradingEnv)

    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.to(self.device, torch.float32).reshape(self.num_envs, -1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return self._obs(obs)

    def check(self) -> None:
        check = getattr(self.env, "check", None)
        if callable(check):
            check()

    def step(self, actions: torch.Tensor) -> Step:
        # The agents act under torch.inference_mode (no version counters or autograd
        # dispatch: ~15 % of an eager VectorStockTradingEnv step), so the env's state
        # becomes inference tensors. Our env only ever replaces its state tensors (its
        # compiled step sees normal ones in any mode: CompiledStep); another torch env
        # may update its state in place later (e.g. in reset), which inference tensors
        # forbid outside that mode, so it steps in normal mode.
        with torch.inference_mode(self._inference):
            obs, rew, term, trunc, info = self.env.step(actions)
        final = info.get("final_obs")
        return Step(
            self._obs(obs),
            rew.to(self.device, torch.float32),
            term.to(self.device),
            trunc.to(self.device),
            None if final is None else self._obs(final),
            info,
        )


class _NumpyVector(TorchVecEnv):
    """A numpy Gymnasium VectorEnv with same-step autoreset, converted at the boundary."""

    native = False

    def __init__(self, env: gym.vector.VectorEnv, device: torch.device) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.device = device
        act = self.single_action_space
        self._act_dtype = act.dtype
        self._clip = (act.low, act.high) if isinstance(act, spaces.Box) else None

    def _obs(self, obs: Any) -> torch.Tensor:
        return self._tensor(np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1))

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> Step:
        a = actions.detach().cpu().numpy()
        if self._clip is not None:
            a = np.clip(a, *self._clip)
        a = a.astype(self._act_dtype, copy=False)
        if isinstance(self.single_action_space, spaces.Discrete):
            a = a.reshape(self.num_envs)
        with torch.inference_mode(False):  # its state is its own (see _TorchNative.step)
            obs, rew, term, trunc, info = self.env.step(a)
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        done = term | trunc
        final = None
        if done.any():
            fo = info.get("final_obs")
            if fo is None:
                raise ValueError(
                    "the vector env ended an episode without info['final_obs']; agents need "
                    "same-step autoreset (AutoresetMode.SAME_STEP)"
                )
            flat = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
            if isinstance(fo, np.ndarray) and fo.dtype != object:  # one dense array
                rows = np.where(done[:, None], fo.reshape(self.num_envs, -1), flat)
            else:  # Gymnasium's object array, rows set where an episode ended
                rows = flat.copy()
                for i in np.flatnonzero(done):
                    rows[i] = np.asarray(fo[i], dtype=np.float32).reshape(-1)
            final = self._tensor(rows.astype(np.float32, copy=False))
        return Step(
            self._obs(obs),
            self._tensor(np.asarray(rew, dtype=np.float32)),
            self._tensor(term),
            self._tensor(trunc),
            final,
            info,
        )

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t if self.device.type == "cpu" else t.to(self.device)


def _is_torch_vector(env: Any) -> bool:
    return isinstance(env, VectorStockTradingEnv) or bool(getattr(env, "returns_torch", False))


def as_torch_vec_env(env: Any, device: torch.device, num_envs: int = 1) -> TorchVecEnv:
    """Wrap ``env`` (see the module docstring) for the training loops."""
    if isinstance(env, TorchVecEnv):
        return env
    if isinstance(env, str):
        env = gym.make_vec(
            env,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        )
    elif isinstance(env, gym.Env):
        single = env
        env = gym.vector.SyncVectorEnv([lambda: single], autoreset_mode=AutoresetMode.SAME_STEP)
    elif not isinstance(env, gym.vector.VectorEnv):
        raise TypeError(
            "env must be a Gymnasium env, a Gymnasium VectorEnv (e.g. VectorStockTradingEnv) "
            f"or an env id string, got {type(env).__name__}"
        )
    obs_space = env.single_observation_space
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(f"agents need a Box observation space, the env has {obs_space}")
    describe_space(env.single_action_space)  # raises for unsupported action spaces
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if str(getattr(mode, "value", mode)) != AutoresetMode.SAME_STEP.value:
        raise ValueError(
            f"the vector env resets with {mode}; agents need same-step autoreset: build it "
            "with gym.make_vec(id, n, vector_kwargs={'autoreset_mode': "
            "gymnasium.vector.AutoresetMode.SAME_STEP}), or pass the env id or a single env"
        )
    if _is_torch_vector(env):
        return _TorchNative(env, device)
    return _NumpyVector(env, device)
