"""The ``[agent]`` table of ``stockgym train --algo sb3-ppo | sb3-dqn | sb3-a2c`` runs:
our keys (:data:`STOCK_KEYS`) and every constructor argument of the SB3 algorithm,
checked against its signature (:func:`sb3_config`). Needs the ``[sb3]`` extra."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

try:
    import stable_baselines3
except ModuleNotFoundError as exc:  # pragma: no cover - the [sb3] extra is missing
    raise ModuleNotFoundError(
        "stable-baselines3 is not installed: pip install 'stockgym[sb3]' (from a checkout: "
        "pip install -e '.[sb3]'); needed by the sb3-* algorithms"
    ) from exc

from stockgym.agents.config import BACKBONES
from stockgym.core import check_int, check_number

#: ``stockgym train`` algorithm name -> stable-baselines3 class name.
SB3_ALGOS = {"sb3-ppo": "PPO", "sb3-dqn": "DQN", "sb3-a2c": "A2C"}

#: Our ``[agent]`` keys for SB3 runs and their defaults (the rest are SB3's arguments).
STOCK_KEYS: dict[str, Any] = {
    "backbone": "mlp",
    "hidden_size": 64,
    "num_layers": 2,
    "kernel_size": 3,
    "reward_scale": 1.0,
    "pretrained": None,
    "freeze_pretrained": False,
    "threads": None,
}

#: Where a stock-trading SB3 run starts (``[agent]`` values win; anything not named here
#: is SB3's default). As for our agents (``run.STOCK_DEFAULTS``): rewards in percent and
#: a short horizon. PPO: 64 steps x 8 envs per rollout, minibatches of 128; DQN: a
#: 100k-transition buffer (SB3's 1M would reserve GBs), 2000 steps before learning.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "sb3-ppo": {
        "reward_scale": 100.0,
        "gamma": 0.9,
        "learning_rate": 1e-3,
        "n_steps": 64,
        "batch_size": 128,
    },
    "sb3-a2c": {"reward_scale": 100.0, "gamma": 0.9},
    "sb3-dqn": {
        "reward_scale": 100.0,
        "gamma": 0.9,
        "learning_rate": 1e-3,
        "buffer_size": 100_000,
        "learning_starts": 2000,
        "batch_size": 128,
        "target_update_interval": 250,
        "exploration_fraction": 0.3,
    },
}

#: SB3 constructor arguments a config may not set (the run sets them, or they are not data).
_RUN_OWNED = (
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "tensorboard_log",
    "verbose",
    "_init_setup_model",
)


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
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if ann is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(ann)
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(args)
            and all(_accepts(v, a) for v, a in zip(value, args, strict=True))
        )
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


def sb3_config(
    algo: str, agent: dict[str, Any], *, seed: int = 0, device: str = "auto", num_envs: int = 8
) -> SB3Config:
    """The :class:`SB3Config` of a :class:`~stockgym.experiment.TrainConfig` whose
    ``algo`` is ``sb3-*``: :data:`SB3_DEFAULTS`, then ``[agent]``; ``ValueError`` naming
    the key and the algorithm for anything SB3's constructor does not take or a value of
    the wrong type."""
    params = sb3_params(algo)
    cls_name = f"SB3 {SB3_ALGOS[algo]}"
    for key in ("seed", "device", "num_envs"):
        if key in agent:
            raise ValueError(
                f"set {key} at the top level of the config (or [env] for num_envs), not in [agent]"
            )
    merged = {**SB3_DEFAULTS[algo], **agent}
    unknown = sorted(k for k in merged if k not in STOCK_KEYS and k not in params)
    if unknown:
        settable = [k for k, p in params.items() if _type_name(p.annotation)]
        raise ValueError(
            f"unknown [agent] key(s) {unknown} for {algo}: it takes stockgym keys "
            f"{', '.join(STOCK_KEYS)} and {cls_name} arguments {', '.join(settable)}"
        )
    ours = {**STOCK_KEYS, **{k: v for k, v in merged.items() if k in STOCK_KEYS}}
    if ours["backbone"] not in BACKBONES:
        raise ValueError(
            f"[agent] backbone for {algo} must be one of {BACKBONES}, got {ours['backbone']!r}"
        )
    for name in ("hidden_size", "num_layers", "kernel_size"):
        check_int(f"[agent] {name}", ours[name], 1)
    check_number("[agent] reward_scale", ours["reward_scale"], lo=0.0, lo_open=True)
    if ours["threads"] is not None:
        check_int("[agent] threads", ours["threads"], 1)
    if ours["pretrained"] is not None and not isinstance(ours["pretrained"], str):
        raise ValueError(f"[agent] pretrained must be a path, got {ours['pretrained']!r}")
    if not isinstance(ours["freeze_pretrained"], bool):
        raise ValueError(
            f"[agent] freeze_pretrained must be true or false, got {ours['freeze_pretrained']!r}"
        )
    sb3: dict[str, Any] = {}
    for key, p in params.items():
        if key not in merged:
            sb3[key] = p.default if p.default is not inspect.Parameter.empty else None
            continue
        value = merged[key]
        if not _accepts(value, p.annotation):
            want = _type_name(p.annotation)
            if not want:
                raise ValueError(
                    f"[agent] {key} of {algo} takes a Python class or function "
                    "and cannot be set from a config"
                )
            raise ValueError(f"[agent] {key} of {algo} ({cls_name}) must be {want}, got {value!r}")
        if key == "train_freq" and isinstance(value, list):
            value = tuple(value)
        sb3[key] = value
    pk = sb3.get("policy_kwargs") or {}
    taken = sorted({"features_extractor_class", "features_extractor_kwargs"} & set(pk))
    if taken:
        raise ValueError(
            f"[agent] policy_kwargs {taken}: the extractor is set by "
            "backbone / hidden_size / num_layers / kernel_size"
        )
    return SB3Config(algo=algo, **ours, seed=seed, device=device, num_envs=num_envs, sb3=sb3)
