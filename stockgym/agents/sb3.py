"""stable-baselines3 inside stockgym: feature extractors over our backbones, and
``stockgym train --algo sb3-ppo | sb3-dqn | sb3-a2c`` run dirs (needs the ``[sb3]`` extra).

Feature extractors (:class:`StockFeatures`, and :class:`MLPFeatures`,
:class:`CNNFeatures`, :class:`LSTMFeatures` with the backbone fixed) are
``BaseFeaturesExtractor`` subclasses around the agents' own
:class:`~stockgym.agents.networks.Encoder`: the feature block of the flat observation
is reshaped with the env's ``obs_layout`` to ``(window, assets x features)`` and encoded
by a :mod:`stockgym.forecasters` module (``MLP | CNN | LSTM``, ``encode``); each asset's
weight and the cash fraction are appended. ``features_dim = hidden_size + n_assets + 1``.
SB3's policy puts its ``net_arch`` MLP heads on top::

    from stable_baselines3 import PPO
    from stockgym.agents.sb3 import StockFeatures, stock_policy_kwargs

    env = StockTradingEnv(prices, window_size=30)          # or SB3VecEnv(VectorStockTradingEnv(...))
    PPO("MlpPolicy", env, policy_kwargs=dict(
        features_extractor_class=StockFeatures,
        features_extractor_kwargs=dict(backbone="lstm", layout=env.obs_layout)))
    PPO("MlpPolicy", env, policy_kwargs=stock_policy_kwargs(env, backbone="lstm"))  # the same

The observation Box carries no layout, so ``layout`` (the env's ``obs_layout``, its
``to_dict()`` or :func:`~stockgym.agents.common.layout_of`'s dict) must be given for
``cnn`` / ``lstm``; without it ``mlp`` reads the whole observation as one row.

Training runs: :func:`train_sb3` is what ``stockgym.agents.train`` calls for an
``sb3-*`` algorithm. Same data loading, split, scaler, envs, validation backtests and
run-dir layout as our agents (``config.json``, ``config.toml``, ``scaler.json``,
``tensorboard/``, ``model/``, ``summary.json``); the SB3 algorithm trains on the
run's :class:`~stockgym.envs.VectorStockTradingEnv` through
:class:`~stockgym.envs.sb3.SB3VecEnv` (``env.num_envs`` envs, random starts,
``episode_length``), seeded with the run's ``seed`` (env i: seed + i) on its ``device``.
``[agent]`` holds SB3's own constructor arguments for the algorithm (checked against its
signature: an unknown key or a value of the wrong type is an error naming the key and
the algorithm) and ours: ``backbone``, ``hidden_size``, ``num_layers``,
``kernel_size``, ``pretrained`` / ``freeze_pretrained`` (a forecaster's encoder starts
the extractor), ``reward_scale`` (rewards are multiplied by it before SB3 sees them;
episode returns in logs stay unscaled), ``threads`` (torch CPU threads while training;
unset: torch's setting). Defaults: :data:`SB3_DEFAULTS`.

The model is saved as ``model/sb3.zip`` (SB3's format, written atomically) plus
``model/agent.json`` (for people, and to know which SB3 class loads it). **Security:**
SB3 ``.zip`` files hold pickled (cloudpickle) Python objects and SB3's loader unpickles
them, which can run arbitrary code: load only files you trust (your own runs). Our own
agents' ``agent.pt`` files are read with ``weights_only=True`` instead.

Not supported for SB3 runs: ``stockgym train --resume`` (SB3 writes no
optimizer/RNG/env checkpoint; ``checkpoint_freq`` only re-saves ``model/sb3.zip``, so an
interrupted run can still be backtested).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import io
import math
import time
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces

try:
    import stable_baselines3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import VecEnvWrapper
except ModuleNotFoundError as exc:  # pragma: no cover - the [sb3] extra is missing
    raise ModuleNotFoundError(
        "stable-baselines3 is not installed: pip install 'stockgym[sb3]' "
        "(needed by stockgym.agents.sb3 and the sb3-* algorithms)") from exc

from stockgym.agents.common import describe_space, layout_of, torch_threads
from stockgym.agents.networks import Encoder, encoder_spec, pretrained_spec

if TYPE_CHECKING:
    import pandas as pd

    from stockgym.agents.run import TrainConfig, TrainResult

#: ``stockgym train`` algorithm name -> stable-baselines3 class name.
SB3_ALGOS = {"sb3-ppo": "PPO", "sb3-dqn": "DQN", "sb3-a2c": "A2C"}

#: Our ``[agent]`` keys for SB3 runs and their defaults (the rest are SB3's arguments).
STOCK_KEYS: dict[str, Any] = {"backbone": "mlp", "hidden_size": 64, "num_layers": 2,
                              "kernel_size": 3, "reward_scale": 1.0, "pretrained": None,
                              "freeze_pretrained": False, "threads": None}

#: Where a stock-trading SB3 run starts (``[agent]`` values win; anything not named here
#: is SB3's default). As for our agents (``run.STOCK_DEFAULTS``): rewards in percent and
#: a short horizon. PPO: 64 steps x 8 envs per rollout, minibatches of 128; DQN: a
#: 100k-transition buffer (SB3's 1M would reserve GBs), 2000 steps before learning.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "sb3-ppo": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 1e-3, "n_steps": 64,
                "batch_size": 128},
    "sb3-a2c": {"reward_scale": 100.0, "gamma": 0.9},
    "sb3-dqn": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 1e-3,
                "buffer_size": 100_000, "learning_starts": 2000, "batch_size": 128,
                "target_update_interval": 250, "exploration_fraction": 0.3},
}

#: SB3 constructor arguments a config may not set (the run sets them, or they are not data).
_RUN_OWNED = ("self", "policy", "env", "seed", "device", "tensorboard_log", "verbose",
              "_init_setup_model")

FORMAT = "stockgym.sb3_agent"
VERSION = 1
MODEL_FILE = "sb3.zip"
META_FILE = "agent.json"


# ------------------------------------------------------------------ extractors
def _layout_dict(layout: Any) -> dict[str, Any] | None:
    """A plain layout dict from ``None``, a dict, an ``ObsLayout`` or an env."""
    if layout is None:
        return None
    if isinstance(layout, dict):
        missing = {"window", "n_assets", "n_features"} - set(layout)
        if missing:
            raise ValueError(f"layout dict lacks {sorted(missing)}: {layout}")
        return {"window": int(layout["window"]), "n_assets": int(layout["n_assets"]),
                "n_features": int(layout["n_features"]),
                "symbols": list(layout.get("symbols", ())),
                "feature_names": list(layout.get("feature_names", ()))}
    found = find_layout(layout)
    if found is None:
        raise ValueError(f"cannot find a stockgym observation layout in {type(layout).__name__}; "
                         "pass env.unwrapped.obs_layout (or its to_dict())")
    return found


def find_layout(obj: Any) -> dict[str, Any] | None:
    """The stockgym observation layout of an ``ObsLayout``, a single or vector env, an
    ``SB3VecEnv`` or an SB3 ``VecEnv`` of stockgym envs (``None`` if there is none)."""
    if hasattr(obj, "to_dict") and hasattr(obj, "window"):  # an ObsLayout
        return _layout_dict(obj.to_dict())
    for cand in (obj, getattr(obj, "venv", None), getattr(getattr(obj, "venv", None), "venv", None)):
        if cand is None:
            continue
        found = layout_of(cand)
        if found is not None:
            return found
    get_attr = getattr(obj, "get_attr", None)  # SB3 DummyVecEnv / SubprocVecEnv
    if callable(get_attr):
        try:
            value = get_attr("obs_layout", [0])[0]
        except (AttributeError, IndexError, TypeError):
            return None
        return _layout_dict(value.to_dict()) if hasattr(value, "to_dict") else None
    return None


class StockFeatures(BaseFeaturesExtractor):
    """SB3 features extractor over a stockgym backbone (see the module docstring).

    ``backbone``: ``mlp | cnn | lstm``; ``hidden_size``, ``num_layers``, ``kernel_size``
    (cnn): the :mod:`stockgym.forecasters` module's size; ``layout``: the env's
    observation layout (``ObsLayout``, dict or env; needed for cnn / lstm); ``spec``:
    a full :class:`~stockgym.agents.networks.Encoder` spec instead of the above (a
    pretrained forecaster's). ``features_dim`` = the encoding size + n_assets + 1
    (with a layout) or ``hidden_size`` (without).
    """

    default_backbone = "mlp"

    def __init__(self, observation_space: spaces.Box, backbone: str | None = None,
                 hidden_size: int = 64, num_layers: int = 2, kernel_size: int = 3,
                 layout: Any = None, spec: dict[str, Any] | None = None) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(f"{type(self).__name__} reads a flat Box observation, got "
                             f"{observation_space}")
        obs_dim = int(np.prod(observation_space.shape))
        if spec is None:
            backbone = self._backbone(backbone)
            spec = encoder_spec(obs_dim, _layout_dict(layout), backbone, hidden_size,
                                num_layers, kernel_size)
        elif spec.get("obs_dim") != obs_dim:
            raise ValueError(f"encoder spec reads {spec.get('obs_dim')} values, the "
                             f"observation has {obs_dim}")
        encoder = Encoder(spec)
        super().__init__(observation_space, features_dim=encoder.out_dim)
        self.encoder = encoder
        self.spec = spec

    def _backbone(self, backbone: str | None) -> str:
        fixed = type(self).default_backbone
        if backbone is None:
            return fixed
        if type(self) is not StockFeatures and backbone != fixed:
            raise ValueError(f"{type(self).__name__} is the {fixed} backbone; use "
                             f"StockFeatures(backbone={backbone!r}) for another")
        return backbone

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` observations -> ``(B, features_dim)``."""
        return self.encoder(observations.reshape(observations.shape[0], -1).float())


class MLPFeatures(StockFeatures):
    """:class:`StockFeatures` with the ``mlp`` backbone."""

    default_backbone = "mlp"


class CNNFeatures(StockFeatures):
    """:class:`StockFeatures` with the ``cnn`` backbone (needs ``layout``)."""

    default_backbone = "cnn"


class LSTMFeatures(StockFeatures):
    """:class:`StockFeatures` with the ``lstm`` backbone (needs ``layout``)."""

    default_backbone = "lstm"


def stock_policy_kwargs(env: Any, backbone: str = "mlp", hidden_size: int = 64,
                        num_layers: int = 2, kernel_size: int = 3,
                        **policy_kwargs: Any) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` that put a stockgym backbone (:class:`StockFeatures`) in front
    of the policy, with ``env``'s observation layout (plain values only, so they save
    into SB3's zip as data). Extra keywords (``net_arch``...) are passed through."""
    layout = find_layout(env)
    if layout is None and backbone != "mlp":
        raise ValueError(f"backbone {backbone!r} needs a stockgym env (an obs_layout); "
                         f"{type(env).__name__} has none: use backbone='mlp'")
    return {"features_extractor_class": StockFeatures,
            "features_extractor_kwargs": {"backbone": backbone, "hidden_size": hidden_size,
                                          "num_layers": num_layers, "kernel_size": kernel_size,
                                          "layout": layout},
            **policy_kwargs}


# ------------------------------------------------------------------ config
def algo_class(algo: str) -> type:
    """The stable-baselines3 class of ``sb3-ppo | sb3-dqn | sb3-a2c``."""
    if algo not in SB3_ALGOS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose one of {sorted(SB3_ALGOS)}")
    return getattr(stable_baselines3, SB3_ALGOS[algo])


def sb3_params(algo: str) -> dict[str, inspect.Parameter]:
    """The SB3 constructor arguments ``[agent]`` may set for ``algo``."""
    sig = inspect.signature(algo_class(algo).__init__)
    return {k: p for k, p in sig.parameters.items() if k not in _RUN_OWNED}


def _accepts(value: Any, ann: Any) -> bool:
    """Whether a config value (TOML types) fits an SB3 annotation."""
    if ann is inspect.Parameter.empty or ann is Any or isinstance(ann, (str, typing.ForwardRef)):
        return True
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, a) for a in typing.get_args(ann))
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if ann is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(ann)
        return (isinstance(value, (list, tuple)) and len(value) == len(args)
                and all(_accepts(v, a) for v, a in zip(value, args, strict=True)))
    if ann is dict or origin is dict:
        return isinstance(value, dict)
    if origin in (collections.abc.Callable, type) or ann is type:
        return False  # classes and functions cannot come from a config file
    return True


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(ann)]
        return " or ".join(n for n in names if n)
    if ann in (bool, int, float, str):
        return ann.__name__
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in typing.get_args(ann)) + "]"
    if ann is dict or origin is dict:
        return "a table"
    return ""


@dataclass
class SB3Config:
    """The resolved ``[agent]`` of an SB3 run: ``algo``, our keys (:data:`STOCK_KEYS`),
    the run's ``seed`` / ``device`` / ``num_envs`` and ``sb3`` (every constructor
    argument of the SB3 class, SB3's defaults filled in)."""

    algo: str
    backbone: str = "mlp"
    hidden_size: int = 64
    num_layers: int = 2
    kernel_size: int = 3
    reward_scale: float = 1.0
    pretrained: str | None = None
    freeze_pretrained: bool = False
    threads: int | None = None
    seed: int = 0
    device: str = "auto"
    num_envs: int = 8
    sb3: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-able (what ``config.json``'s ``agent`` holds)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sb3"}
        return {**out, **self.sb3}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SB3Config:
        """Back from :meth:`to_dict` (SB3 arguments are every key that is not ours)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"sb3"}
        ours = {k: v for k, v in data.items() if k in names}
        return cls(**ours, sb3={k: v for k, v in data.items() if k not in names})


def sb3_config(config: TrainConfig) -> SB3Config:
    """The :class:`SB3Config` of a :class:`~stockgym.agents.run.TrainConfig` whose
    ``algo`` is ``sb3-*``: :data:`SB3_DEFAULTS`, then ``[agent]``; ``ValueError`` naming
    the key and the algorithm for anything SB3's constructor does not take or a value of
    the wrong type."""
    from stockgym.agents.common import BACKBONES, _check_int, _check_number

    algo = config.algo
    params = sb3_params(algo)
    cls_name = f"SB3 {SB3_ALGOS[algo]}"
    for key in ("seed", "device", "num_envs"):
        if key in config.agent:
            raise ValueError(f"set {key} at the top level of the config (or [env] for "
                             "num_envs), not in [agent]")
    merged = {**SB3_DEFAULTS[algo], **config.agent}
    unknown = sorted(k for k in merged if k not in STOCK_KEYS and k not in params)
    if unknown:
        settable = [k for k, p in params.items() if _type_name(p.annotation)]
        raise ValueError(
            f"unknown [agent] key(s) {unknown} for {algo}: it takes stockgym keys "
            f"{', '.join(STOCK_KEYS)} and {cls_name} arguments {', '.join(settable)}")
    ours = {**STOCK_KEYS, **{k: v for k, v in merged.items() if k in STOCK_KEYS}}
    if ours["backbone"] not in BACKBONES:
        raise ValueError(f"[agent] backbone for {algo} must be one of {BACKBONES}, "
                         f"got {ours['backbone']!r}")
    for name in ("hidden_size", "num_layers", "kernel_size"):
        _check_int(f"[agent] {name}", ours[name], 1)
    _check_number("[agent] reward_scale", ours["reward_scale"], lo=0.0, lo_open=True)
    if ours["threads"] is not None:
        _check_int("[agent] threads", ours["threads"], 1)
    if ours["pretrained"] is not None and not isinstance(ours["pretrained"], str):
        raise ValueError(f"[agent] pretrained must be a path, got {ours['pretrained']!r}")
    if not isinstance(ours["freeze_pretrained"], bool):
        raise ValueError(f"[agent] freeze_pretrained must be true or false, "
                         f"got {ours['freeze_pretrained']!r}")
    sb3: dict[str, Any] = {}
    for key, p in params.items():
        if key not in merged:
            sb3[key] = p.default if p.default is not inspect.Parameter.empty else None
            continue
        value = merged[key]
        if not _accepts(value, p.annotation):
            want = _type_name(p.annotation)
            if not want:
                raise ValueError(f"[agent] {key} of {algo} takes a Python class or function "
                                 "and cannot be set from a config")
            raise ValueError(f"[agent] {key} of {algo} ({cls_name}) must be {want}, "
                             f"got {value!r}")
        if key == "train_freq" and isinstance(value, list):
            value = tuple(value)
        sb3[key] = value
    pk = sb3.get("policy_kwargs") or {}
    taken = sorted({"features_extractor_class", "features_extractor_kwargs"} & set(pk))
    if taken:
        raise ValueError(f"[agent] policy_kwargs {taken}: the extractor is set by "
                         "backbone / hidden_size / num_layers / kernel_size")
    return SB3Config(algo=algo, **ours, seed=config.seed, device=config.device,
                     num_envs=config.num_envs, sb3=sb3)


# ------------------------------------------------------------------ the agent
class _ScaleReward(VecEnvWrapper):
    """Multiply rewards by ``scale`` (episode returns in ``info`` stay unscaled)."""

    def __init__(self, venv: Any, scale: float) -> None:
        super().__init__(venv)
        self.scale = float(scale)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rew, done, infos = self.venv.step_wait()
        return obs, (rew * self.scale).astype(np.float32), done, infos


class SB3Agent:
    """A stable-baselines3 model with the face of our agents: ``predict(obs,
    deterministic=True)``, ``check_env(env)``, ``num_timesteps``, ``config``,
    ``device``, ``save(dir)`` / :meth:`load` (``dir/sb3.zip`` + ``dir/agent.json``).
    ``model`` is the SB3 algorithm object itself."""

    def __init__(self, model: Any, config: SB3Config, layout: dict[str, Any] | None) -> None:
        self.model = model
        self.config = config
        self.algo = config.algo
        self.layout = layout

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_timesteps(self) -> int:
        return int(self.model.num_timesteps)

    @property
    def observation_space(self) -> spaces.Space:
        return self.model.observation_space

    @property
    def action_space(self) -> spaces.Space:
        return self.model.action_space

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[Any, Any]:
        """``(action, state)`` as SB3's ``predict``; one Discrete observation gives a
        numpy integer (ready for ``env.step``); torch in -> torch out."""
        is_torch = isinstance(observation, torch.Tensor)
        obs = observation.detach().cpu().numpy() if is_torch else np.asarray(observation,
                                                                            dtype=np.float32)
        action, state = self.model.predict(obs, state=state, episode_start=episode_start,
                                           deterministic=deterministic)
        if is_torch:
            return torch.as_tensor(action, device=observation.device), state
        if isinstance(action, np.ndarray) and action.ndim == 0:
            action = action[()]
        return action, state

    def check_env(self, env: Any) -> None:
        """``ValueError`` naming both sides if ``env``'s spaces or layout differ from the
        model's (as our agents' ``check_env``)."""
        from stockgym.agents.base import Agent, check_fit

        obs_space = getattr(env, "single_observation_space", None) or env.observation_space
        act_space = getattr(env, "single_action_space", None) or env.action_space
        sig = Agent._signature
        mine = sig(describe_space(self.observation_space), describe_space(self.action_space),
                   self.layout)
        theirs = sig(describe_space(obs_space), describe_space(act_space), find_layout(env))
        check_fit(self.algo, self.config.backbone, mine, theirs)

    def meta(self) -> dict[str, Any]:
        """What ``agent.json`` holds (JSON-able)."""
        import stockgym

        return {"format": FORMAT, "version": VERSION, "algo": self.algo,
                "sb3_class": SB3_ALGOS[self.algo], "model_file": MODEL_FILE,
                "config": self.config.to_dict(),
                "observation_space": describe_space(self.observation_space),
                "action_space": describe_space(self.action_space), "layout": self.layout,
                "num_timesteps": self.num_timesteps,
                "versions": {"stockgym": stockgym.__version__,
                             "stable-baselines3": stable_baselines3.__version__,
                             "torch": str(torch.__version__)}}

    def save(self, path: str | Path) -> Path:
        """Write ``path/sb3.zip`` (SB3's own format, without the replay buffer) and
        ``path/agent.json`` atomically; ``path`` is created if needed."""
        from stockgym.forecasters import storage

        path = Path(path)
        buf = io.BytesIO()
        self.model.save(buf)
        storage.write_bytes(path / MODEL_FILE, buf.getvalue())
        storage.write_json(path / META_FILE, self.meta())
        return path

    @classmethod
    def load(cls, path: str | Path, env: Any = None, device: str = "auto") -> SB3Agent:
        """Load a saved SB3 agent (a dir holding ``sb3.zip``, a run dir with
        ``model/sb3.zip``, or the zip itself) through SB3's own loader.

        **Only load files you trust**: an SB3 zip holds pickled Python objects and
        unpickling one can run arbitrary code."""
        zip_file = sb3_model_file(path)
        if zip_file is None:
            raise FileNotFoundError(f"no SB3 model at {path} (looked for {MODEL_FILE} and "
                                    f"model/{MODEL_FILE})")
        meta_file = zip_file.parent / META_FILE
        from stockgym.forecasters import storage

        if not meta_file.is_file():
            raise FileNotFoundError(f"{zip_file} has no {META_FILE} next to it (it says which "
                                    "SB3 algorithm to load it with)")
        meta = storage.read_json(meta_file, "SB3 agent description (agent.json)")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file} does not describe a stockgym SB3 agent")
        config = SB3Config.from_dict(meta["config"])
        try:
            model = algo_class(meta["algo"]).load(zip_file, env=env, device=device)
        except (ValueError, KeyError, RuntimeError, OSError, EOFError) as exc:
            raise ValueError(f"cannot load SB3 model {zip_file}: {exc}") from exc
        return cls(model, config, meta.get("layout"))


def sb3_model_file(path: str | Path) -> Path | None:
    """``sb3.zip`` at ``path`` (the file, a model dir or a run dir), or ``None``."""
    path = Path(path)
    for cand in (path, path / MODEL_FILE, path / "model" / MODEL_FILE):
        if cand.is_file() and cand.suffix == ".zip":
            return cand
    return None


def load_sb3(path: str | Path, env: Any = None, device: str = "auto") -> SB3Agent:
    """:meth:`SB3Agent.load` (trusted files only: SB3 zips are unpickled)."""
    return SB3Agent.load(path, env=env, device=device)


def make_agent(venv: Any, config: SB3Config) -> SB3Agent:
    """A new SB3 model for ``config`` training on ``venv`` (a
    :class:`~stockgym.envs.VectorStockTradingEnv`, through ``SB3VecEnv``). SB3's own
    refusals (an action space the algorithm cannot handle, bad sizes) become
    ``ValueError`` naming the algorithm."""
    from stockgym.core import resolve_device
    from stockgym.agents.networks import load_forecaster_weights
    from stockgym.envs.sb3 import SB3VecEnv

    env: Any = SB3VecEnv(venv)
    if config.reward_scale != 1.0:
        env = _ScaleReward(env, config.reward_scale)
    layout = find_layout(venv)
    obs_dim = int(np.prod(venv.single_observation_space.shape))
    forecaster = None
    if config.pretrained:
        spec, forecaster = pretrained_spec(config.pretrained, obs_dim, layout)
        extractor = {"spec": spec}
    else:
        extractor = {"backbone": config.backbone, "hidden_size": config.hidden_size,
                     "num_layers": config.num_layers, "kernel_size": config.kernel_size,
                     "layout": layout}
    kwargs = dict(config.sb3)
    policy_kwargs = {**(kwargs.pop("policy_kwargs", None) or {}),
                     "features_extractor_class": StockFeatures,
                     "features_extractor_kwargs": extractor}
    device = str(resolve_device(config.device))
    try:
        model = algo_class(config.algo)("MlpPolicy", env, seed=config.seed, device=device,
                                        verbose=0, policy_kwargs=policy_kwargs, **kwargs)
    except (AssertionError, ValueError, TypeError) as exc:
        raise ValueError(f"{config.algo} ({SB3_ALGOS[config.algo]}) cannot be built with "
                         f"this config: {exc}") from exc
    if forecaster is not None:
        for mod in model.policy.modules():
            if isinstance(mod, StockFeatures):
                load_forecaster_weights(mod, forecaster)
                if config.freeze_pretrained:
                    mod.encoder.body.requires_grad_(False)
    return SB3Agent(model, config, layout)


# ------------------------------------------------------------------ training runs
class _RunCallback(BaseCallback):
    """Episode charts, validation backtests, model saves and the progress bar."""

    def __init__(self, fn: Any) -> None:
        super().__init__(verbose=0)
        self.fn = fn

    def _on_step(self) -> bool:
        return self.fn(self.locals.get("infos") or [], int(self.model.num_timesteps))


def train_sb3(config: TrainConfig, *, prices: pd.DataFrame | None = None) -> TrainResult:
    """``stockgym.agents.train`` for an ``sb3-*`` algorithm (see the module docstring):
    the same run dir as our agents. Bad config values fail before anything is written;
    a failure while training removes the run dir; Ctrl-C keeps it (the model so far and
    ``"interrupted": true`` in ``summary.json``) and re-raises."""
    from stockgym.agents import run as R
    from stockgym.forecasters import storage

    prep = R.prepare(config, prices)
    run_dir = Path(config.run_dir) if config.run_dir else R._default_run_dir(config)
    storage.check_new_dir(run_dir)
    config = config.replace(run_dir=str(run_dir),
                            env=dataclasses.replace(config.env, num_envs=config.num_envs))
    agent = make_agent(prep["venv"], prep["agent_config"])
    dates = prep["dates"]
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        record = R.run_record(config, prep, agent)
        record["versions"]["stable-baselines3"] = stable_baselines3.__version__
        storage.write_json(run_dir / "config.json", record)
        storage.write_text(run_dir / "config.toml", R.to_toml(R._toml_ready(config)))
        if prep["scaler"] is not None:
            prep["scaler"].save(run_dir / "scaler.json")
        bench = R.buy_and_hold(prep["valid_env"], (dates["valid"]["first"], dates["valid"]["last"]))
    except BaseException:
        R._remove(run_dir, created)
        raise
    try:
        return _learn(config, prep, run_dir, agent, record, bench)
    except KeyboardInterrupt:
        raise
    except BaseException:
        R._remove(run_dir, created)
        raise


def _learn(config: TrainConfig, prep: dict[str, Any], run_dir: Path, agent: SB3Agent,
           record: dict[str, Any], bench: dict[str, float]) -> TrainResult:
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat

    from stockgym.agents import run as R
    from stockgym.forecasters import storage

    valid_env, dates = prep["valid_env"], prep["dates"]
    valid_period = (dates["valid"]["first"], dates["valid"]["last"])
    tb = run_dir / "tensorboard"
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb.mkdir(exist_ok=True)
        agent.model.set_logger(Logger(str(tb), [TensorBoardOutputFormat(str(tb))]))
        writer = SummaryWriter(log_dir=str(tb))  # our scalars (charts/*, eval/*) beside SB3's
    else:
        agent.model.set_logger(Logger(None, []))
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=config.total_timesteps, desc=config.algo, unit="step",
                   dynamic_ncols=True, disable=None, leave=False)
    history: list[dict[str, Any]] = []
    recent: deque[float] = deque(maxlen=100)
    state = {"next_eval": config.eval_freq or None, "next_save": config.checkpoint_freq or None,
             "shown": 0}

    def on_step(infos: list[dict[str, Any]], step: int) -> bool:
        for info in infos:
            ep = info.get("episode")
            if ep is not None:
                recent.append(float(ep["r"]))
                if writer is not None:
                    writer.add_scalar("charts/episodic_return", ep["r"], step)
                    writer.add_scalar("charts/episodic_length", ep["l"], step)
        nxt = state["next_eval"]
        if nxt is not None and step >= nxt:
            while state["next_eval"] <= step:
                state["next_eval"] += config.eval_freq
            ev = R.evaluate_on(agent, valid_env, valid_period)[0]
            ev["excess_return"] = ev["return"] - bench["return"]
            history.append({"step": step, **ev})
            if writer is not None:
                for key in ("return", "sharpe", "excess_return"):
                    writer.add_scalar(f"eval/{key}", ev[key], step)
        nxt = state["next_save"]
        if nxt is not None and step >= nxt:
            while state["next_save"] <= step:
                state["next_save"] += config.checkpoint_freq
            agent.save(run_dir / "model")  # an interrupted run can still be backtested
        if bar is not None:
            bar.update(min(step, config.total_timesteps) - state["shown"])
            state["shown"] = min(step, config.total_timesteps)
        return True

    interrupted = False
    try:
        with torch_threads(agent.config.threads):
            t0 = time.perf_counter()
            try:
                agent.model.learn(config.total_timesteps, callback=_RunCallback(on_step))
            except KeyboardInterrupt:
                interrupted = True
            seconds = time.perf_counter() - t0
            final = R.evaluate_on(agent, valid_env, valid_period)[0]
        final["excess_return"] = final["return"] - bench["return"]
        if writer is not None:
            for key in ("return", "sharpe", "excess_return"):
                writer.add_scalar(f"eval/{key}", final[key], agent.num_timesteps)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        agent.model.logger.close()
    agent.save(run_dir / "model")
    steps = agent.num_timesteps
    summary = {
        "algo": config.algo, "timesteps": steps, "seconds": round(seconds, 2),
        "sps": round(steps / seconds, 1) if seconds > 0 else None,
        "interrupted": interrupted, "resumes": 0,
        "train_recent_return": R._finite(float(np.mean(recent))) if recent else None,
        "valid": {"period": dates["valid"], "agent": final, "buy_and_hold": bench},
        "eval_history": history,
    }
    storage.write_json(run_dir / "summary.json", R._json_ready(summary))
    if interrupted:
        raise KeyboardInterrupt
    return R.TrainResult(agent, run_dir, record, summary)


__all__ = ["SB3_ALGOS", "SB3_DEFAULTS", "STOCK_KEYS", "CNNFeatures", "LSTMFeatures",
           "MLPFeatures", "SB3Agent", "SB3Config", "StockFeatures", "find_layout", "load_sb3",
           "make_agent", "sb3_config", "stock_policy_kwargs", "train_sb3"]
