"""What every agent shares: the common hyperparameters, device and seeding, the
vector-env boundary, episode statistics and logging (TensorBoard + progress bar).

The env boundary (:func:`as_torch_vec_env`) turns whatever the user passes into one
small interface the training loops use, :class:`TorchVecEnv`: ``reset(seed)`` ->
``obs``; ``step(actions)`` -> :class:`Step`, every tensor on the agent's device:

* :class:`~stockgym.envs.VectorStockTradingEnv` (or any Gymnasium ``VectorEnv`` that
  returns torch tensors with same-step autoreset): used as is. On the agent's device
  nothing is copied to the host during a rollout.
* a Gymnasium ``VectorEnv`` with numpy outputs and same-step autoreset
  (``gym.make_vec(id, n, vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})``):
  converted at the boundary (numpy -> tensor once per step).
* a single Gymnasium env: wrapped in a one-env ``SyncVectorEnv``.
* an env id string (``"CartPole-v1"``): ``gym.make_vec(id, num_envs)`` with
  same-step autoreset. CartPole takes the fast path: Gymnasium's numpy-vectorized
  ``CartPoleVectorEnv`` (all N envs in one numpy call, no Python loop over envs),
  converted to same-step autoreset by :class:`SameStepCartPole`.

Observations must be a ``Box`` (flattened to ``(N, D)`` float32). Next-step autoreset
vector envs (Gymnasium's default for ``make_vec``) are refused with a hint: their
first step after an episode ends is not a real transition.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

BACKBONES = ("mlp", "cnn", "lstm")
ACTIVATIONS = ("relu", "tanh")  # the mlp backbone's hidden activations (stockgym.agents.networks)


# ------------------------------------------------------------------ config
@dataclass
class CommonConfig:
    """Hyperparameters every agent has (each algorithm's dataclass adds its own).

    Networks: ``backbone`` (``mlp | cnn | lstm``: :mod:`stockgym.forecasters` modules
    reading the observation as ``(window, assets x features)`` through the env's
    ``obs_layout``; envs without a layout take ``mlp`` over the flat observation),
    ``hidden_size``, ``num_layers``, ``kernel_size`` (cnn), ``pretrained`` (a
    forecaster checkpoint or run dir whose encoder initialises the backbone),
    ``freeze_pretrained``, ``activation`` (hidden activation of the ``mlp`` backbone:
    ``relu``, the default, or ``tanh`` with orthogonal init as SB3's and CleanRL's PPO;
    see :mod:`stockgym.agents.networks`).

    Optimisation: ``learning_rate`` (Adam), ``max_grad_norm`` (gradient clipping by
    global norm; ``None``: off).

    Run: ``num_envs`` (envs made when the env is given as an id), ``seed``,
    ``device`` (``auto``: the env's device for a torch vector env, else cuda when
    present), ``threads`` (torch CPU threads while learning; ``None``: unchanged),
    ``reward_scale`` (rewards are multiplied by it before learning; logged returns are
    unscaled).
    """

    backbone: str = "mlp"
    hidden_size: int = 64
    num_layers: int = 2
    kernel_size: int = 3
    pretrained: str | None = None
    freeze_pretrained: bool = False
    activation: str = "relu"
    num_envs: int = 8
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    reward_scale: float = 1.0
    learning_rate: float = 3e-4
    max_grad_norm: float | None = 0.5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.activation != "relu" and (self.backbone != "mlp" or self.pretrained):
            raise ValueError(f"activation={self.activation!r} applies to a new mlp backbone only "
                             f"(backbone={self.backbone!r}, pretrained={self.pretrained!r})")
        for name in ("hidden_size", "num_layers", "kernel_size", "num_envs"):
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, None)
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        _check_number("reward_scale", self.reward_scale, lo=0.0, lo_open=True)
        _check_number("learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        if self.max_grad_norm is not None:
            _check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the checkpoint and run configs store this)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    #: tuned settings per Gymnasium env id (each algorithm's module-level ``ENV_DEFAULTS``)
    env_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def for_env(cls, env_id: str, **overrides: Any) -> CommonConfig:
        """The config for a Gymnasium env id: this library's tuned defaults for it
        (``env_defaults``), then ``overrides``; plain defaults for other ids."""
        return cls.from_dict({**cls.env_defaults.get(env_id, {}), **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CommonConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the known ones."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)


def _check_int(name: str, value: Any, lo: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def _check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                  lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        rng = ""
        if lo is not None or hi is not None:
            rng = f" in {'(' if lo_open else '['}{lo if lo is not None else '-inf'}, " \
                  f"{hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must be a number{rng}, got {value!r}")


def make_config(cls: type[CommonConfig], config: Any, overrides: dict[str, Any]) -> CommonConfig:
    """``config`` (None, a dict or an instance of ``cls``) with ``overrides`` applied."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, cls):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise TypeError(f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}")
    base.update(overrides)
    return cls.from_dict(base)


# ------------------------------------------------------------------ device, seeds
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads inside the block (``None``: leave torch's setting)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS uses ``n`` threads inside the block. ``learn`` holds it to PyTorch's
    count, so a run's thread setting means one thing for the agents' numpy paths
    (:mod:`stockgym.agents.numpy_mlp`) and PyTorch alike. threadpoolctl (a scikit-learn
    dependency) is how to set it at run time."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``: every random draw an agent
    makes (actions, exploration, minibatches, replay samples) comes from it."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


# ------------------------------------------------------------------ spaces
def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON-able description of a Box / Discrete / MultiDiscrete space."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": [int(x) for x in np.asarray(space.nvec).ravel()]}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": [int(x) for x in space.shape],
                "low": _floats(space.low), "high": _floats(space.high), "dtype": str(space.dtype)}
    raise ValueError(f"unsupported space {space}: agents take Box, Discrete or MultiDiscrete")


def _floats(a: np.ndarray) -> list:
    # JSON has no infinity: store bounds as strings where infinite
    return [float(x) if math.isfinite(x) else str(float(x)) for x in np.asarray(a, dtype=np.float64).ravel()]


def build_space(desc: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    kind = desc["type"]
    if kind == "Discrete":
        return spaces.Discrete(desc["n"], start=desc.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(desc["nvec"])
    shape, dtype = tuple(desc["shape"]), np.dtype(desc["dtype"])
    low = np.array([float(x) for x in desc["low"]], dtype=dtype).reshape(shape)
    high = np.array([float(x) for x in desc["high"]], dtype=dtype).reshape(shape)
    return spaces.Box(low, high, shape=shape, dtype=dtype)


def space_str(desc: dict[str, Any]) -> str:
    """Short text of a space description, for error messages."""
    kind = desc["type"]
    if kind == "Discrete":
        return f"Discrete({desc['n']})"
    if kind == "MultiDiscrete":
        return f"MultiDiscrete({desc['nvec']})"
    lo, hi = desc["low"], desc["high"]
    bounds = f"[{lo[0]}, {hi[0]}]" if len(set(map(str, lo))) == 1 and len(set(map(str, hi))) == 1 else "bounds vary"
    return f"Box(shape={tuple(desc['shape'])}, {bounds})"


def layout_of(env: Any) -> dict[str, Any] | None:
    """The stockgym observation layout of an env (vector, wrapped or single) as a plain
    dict, or ``None`` for other envs."""
    for cand in (env, getattr(env, "unwrapped", None), getattr(env, "template", None)):
        layout = getattr(cand, "obs_layout", None)
        if layout is not None and hasattr(layout, "to_dict"):
            d = layout.to_dict()
            return {"window": int(d["window"]), "n_assets": int(d["n_assets"]),
                    "n_features": int(d["n_features"]), "symbols": list(d["symbols"]),
                    "feature_names": list(d["feature_names"])}
    envs = getattr(env, "envs", None)  # a Gymnasium SyncVectorEnv of stockgym envs
    if envs:
        return layout_of(envs[0])
    return None


# ------------------------------------------------------------------ env boundary
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

    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.to(self.device, torch.float32).reshape(self.num_envs, -1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> Step:
        obs, rew, term, trunc, info = self.env.step(actions)
        final = info.get("final_obs")
        return Step(
            self._obs(obs), rew.to(self.device, torch.float32), term.to(self.device),
            trunc.to(self.device), None if final is None else self._obs(final), info,
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
            self._obs(obs), self._tensor(np.asarray(rew, dtype=np.float32)),
            self._tensor(term), self._tensor(trunc), final, info,
        )

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t if self.device.type == "cpu" else t.to(self.device)


class SameStepCartPole(gym.vector.VectorEnv):
    """Gymnasium's numpy-vectorized CartPole (``CartPoleVectorEnv``: the N envs' physics
    in one numpy call) with same-step autoreset: where an episode ends, ``step`` returns
    the next episode's first observation at once and the last one in
    ``info["final_obs"]`` (a dense ``(N, 4)`` array, rows valid where an episode ended).

    Gymnasium's own class autoresets on the *next* step (that step ignores the action
    and returns reward 0); here the ended envs are reset right after the step with the
    same draw the env's reset makes (``uniform(low, high)`` from its ``np_random``), so
    every step is a real transition. Physics, rewards, the 500-step time limit and the
    spaces are Gymnasium's. Built by :meth:`make` (``None`` for other ids or a
    Gymnasium whose CartPoleVectorEnv lacks the attributes this relies on).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
    _NEEDS = ("state", "steps", "prev_done", "low", "high", "np_random")

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.spec = getattr(env, "spec", None)
        self.render_mode = None

    @classmethod
    def make(cls, env_id: str, num_envs: int) -> SameStepCartPole | None:
        try:
            spec = gym.spec(env_id)
        except gym.error.Error:
            return None
        entry = str(spec.vector_entry_point or "")
        if not entry.endswith(":CartPoleVectorEnv") or spec.kwargs:
            return None
        env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
        raw = env.unwrapped
        if not all(hasattr(raw, a) for a in cls._NEEDS) or raw is not env:
            env.close()
            return None
        return cls(env)

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        env = self.env
        obs, rew, term, trunc, info = env.step(np.asarray(actions))
        done = term | trunc
        if done.any():
            info = dict(info)
            info["final_obs"] = obs
            k = int(done.sum())
            env.state[:, done] = env.np_random.uniform(low=env.low, high=env.high, size=(4, k))
            env.steps[done] = 0
            env.prev_done[:] = False  # already reset: the next step is a real one
            obs = env.state.T.astype(np.float32)
        return obs, rew, term, trunc, info

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


def _is_torch_vector(env: Any) -> bool:
    from stockgym.envs.vector import VectorStockTradingEnv

    return isinstance(env, VectorStockTradingEnv) or bool(getattr(env, "returns_torch", False))


def as_torch_vec_env(env: Any, device: torch.device, num_envs: int = 1) -> TorchVecEnv:
    """Wrap ``env`` (see the module docstring) for the training loops."""
    if isinstance(env, TorchVecEnv):
        return env
    if isinstance(env, str):
        fast = SameStepCartPole.make(env, num_envs)
        env = fast if fast is not None else gym.make_vec(
            env, num_envs=num_envs, vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
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


# ------------------------------------------------------------------ statistics, logging
class EpisodeStats:
    """Running episode returns / lengths of N envs, kept on the device; finished
    episodes are read back (one small host copy) only on steps where some ended.
    ``recent``: the last 100 returns (unscaled rewards); ``portfolio``: final portfolio
    values of stockgym episodes."""

    def __init__(self, num_envs: int, device: torch.device, window: int = 100) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.len = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.recent: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.portfolio: deque[float] = deque(maxlen=window)
        self.episodes = 0
        self.last_finished: list[float] = []

    def update(self, step: Step) -> list[float]:
        """Add one step; returns the returns of the episodes that ended in it."""
        self.ret += step.reward
        self.len += 1
        if step.final_obs is None:
            return []
        done = step.done
        idx = done.nonzero().squeeze(1)
        finished = self.ret[idx].tolist()
        self.recent.extend(finished)
        self.recent_lengths.extend(self.len[idx].tolist())
        pv = step.info.get("portfolio_value")
        if isinstance(pv, torch.Tensor):
            self.portfolio.extend(pv[idx.to(pv.device)].tolist())
        self.ret = torch.where(done, 0.0, self.ret)
        self.len = torch.where(done, 0, self.len)
        self.episodes += len(finished)
        return finished

    def add(self, returns: list[float], lengths: list[int],
            portfolio: list[float] | None = None) -> None:
        """Record whole episodes counted elsewhere (REINFORCE's batches)."""
        self.recent.extend(returns)
        self.recent_lengths.extend(lengths)
        if portfolio is not None:
            self.portfolio.extend(portfolio)
        self.episodes += len(returns)
        self.last_finished = list(returns)

    def mean_return(self) -> float:
        return float(np.mean(self.recent)) if self.recent else math.nan


class Logger:
    """TensorBoard scalars (``log_dir``), a tqdm progress bar with SPS and the recent
    return (``progress``), and ``last``: the latest value of every scalar (for
    summaries and tests)."""

    def __init__(self, log_dir: str | None = None, progress: bool = False, total: int = 0,
                 desc: str = "", purge_step: int | None = None, start_step: int = 0,
                 initial: int = 0) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides what the killed one wrote after its checkpoint
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.last: dict[str, float] = {}
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                            dynamic_ncols=True, disable=None, leave=False)
        self._t0 = time.perf_counter()
        self._base = start_step  # the bar counts steps of this learn call from here
        self._shown = initial

    def scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        self.last[tag] = value
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def episodes(self, stats: EpisodeStats, finished: list[float], step: int) -> None:
        """Log the episodes that ended at ``step``: mean return, length and final
        portfolio value (one point per step, however many envs finished)."""
        if not finished:
            return
        k = len(finished)
        self.scalar("charts/episodic_return", float(np.mean(finished)), step)
        self.scalar("charts/episodic_length", float(np.mean(list(stats.recent_lengths)[-k:])), step)
        if stats.portfolio:
            self.scalar("charts/portfolio_value", float(np.mean(list(stats.portfolio)[-k:])), step)

    def progress(self, step: int, sps: float, stats: EpisodeStats) -> None:
        self.scalar("charts/SPS", sps, step)
        if self.bar is not None:
            self.bar.update(step - self._base - self._shown)
            self._shown = step - self._base
            self.bar.set_postfix(SPS=f"{sps:,.0f}", ret=f"{stats.mean_return():.4g}")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class SPSMeter:
    """Steps per second since the start of ``learn``."""

    def __init__(self, start_step: int) -> None:
        self.t0 = time.perf_counter()
        self.s0 = start_step

    def __call__(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.s0) / dt if dt > 0 else 0.0


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """``start`` moving linearly to ``end`` over ``duration`` steps, then ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, t / duration)


def evaluate_policy(agent: Any, env: Any, n_episodes: int = 10, seed: int = 0,
                    deterministic: bool = True) -> list[float]:
    """Returns of ``n_episodes`` episodes of a single Gymnasium env (or env id) played
    with ``agent.predict``; episode k is reset with ``seed + k``."""
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


# ------------------------------------------------------------------ optimizer steps
def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """Scale the gradients so their global L2 norm is at most ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_``: factor ``min(1, max_norm / (norm + 1e-6))``), in
    four tensor calls for parameters on one device and dtype."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))


def clip_flat_grad(flat: np.ndarray, max_norm: float | None) -> None:
    """:func:`clip_grad_norm` for gradients held in one flat buffer (a written-out
    backward pass's): the same factor ``min(1, max_norm / (norm + 1e-6))``, one norm and
    one multiply; ``None``: no clipping."""
    if max_norm is not None:
        flat *= min(1.0, max_norm / (float(np.linalg.norm(flat)) + 1e-6))


def fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.step()`` for a fused ``torch.optim.Adam`` whose state exists, as one
    call of PyTorch's fused kernel (what ``Adam.step`` ends in) without its ~0.1 ms of
    Python bookkeeping per call, a good part of a small network's update. The state
    stays PyTorch's own (``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints and
    ``optimizer.step()`` are unaffected. Returns False, having done nothing, where this
    does not apply (another optimizer, no state yet, options the shortcut lacks): call
    ``optimizer.step()`` then."""
    if _fused_adam_step(optimizer):
        return True
    # optimizer.step() comes next: it must count each parameter's step once
    seen: set[int] = set()
    for st in optimizer.state.values():
        if "step" in st and isinstance(st["step"], torch.Tensor):
            if id(st["step"]) in seen:
                st["step"] = st["step"].clone()
            seen.add(id(st["step"]))
    return False


def _fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """The shortcut of :func:`fused_adam_step`; False where it does not apply."""
    kernel = getattr(torch, "_fused_adam_", None)
    if kernel is None or type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    if not group.get("fused") or group["amsgrad"] or group["maximize"] or group["weight_decay"] \
            or group.get("differentiable") or group.get("capturable") \
            or not isinstance(group["lr"], float):
        return False
    params = [p for p in group["params"] if p.grad is not None]
    states = [optimizer.state.get(p) for p in params]
    if not params or any(not st for st in states):
        return False
    # The parameters step together, so they can share one step counter: one add per
    # update instead of one per parameter (a loaded state has separate, equal counters).
    step = states[0]["step"]
    if any(st["step"] is not step for st in states):
        if any(not torch.equal(st["step"], step) for st in states):
            return False
        for st in states:
            st["step"] = step
    step.add_(1)
    beta1, beta2 = group["betas"]
    kernel(params, [p.grad for p in params], [st["exp_avg"] for st in states],
           [st["exp_avg_sq"] for st in states], [], [step] * len(params), lr=group["lr"], beta1=beta1,
           beta2=beta2, weight_decay=0.0, eps=group["eps"], amsgrad=False, maximize=False)
    return True
