"""The hyperparameters every agent has (:class:`CommonConfig`; each algorithm's dataclass
adds its own) and :func:`make_config`, which builds one from what a user passes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from stockgym.core import check_int, check_number

BACKBONES = ("mlp", "cnn", "lstm", "gru", "tcn", "transformer")
ACTIVATIONS = ("relu", "tanh")  # the mlp backbone's hidden activations (stockgym.agents.networks)


@dataclass
class CommonConfig:
    """Hyperparameters every agent has (each algorithm's dataclass adds its own).

    Networks: ``backbone`` (``mlp | cnn | lstm | gru | tcn | transformer``: :mod:`stockgym.forecasters` modules
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

    #: tuned settings per Gymnasium env id (each algorithm's module-level ``ENV_DEFAULTS``)
    env_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.activation != "relu" and (self.backbone != "mlp" or self.pretrained):
            raise ValueError(
                f"activation={self.activation!r} applies to a new mlp backbone only "
                f"(backbone={self.backbone!r}, pretrained={self.pretrained!r})"
            )
        for name in ("hidden_size", "num_layers", "kernel_size", "num_envs"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, None)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        check_number("reward_scale", self.reward_scale, lo=0.0, lo_open=True)
        check_number("learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the checkpoint and run configs store this)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

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


def make_config(cls: type[CommonConfig], config: Any, overrides: dict[str, Any]) -> CommonConfig:
    """``config`` (None, a dict or an instance of ``cls``) with ``overrides`` applied."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, cls):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise TypeError(
            f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}"
        )
    base.update(overrides)
    return cls.from_dict(base)
