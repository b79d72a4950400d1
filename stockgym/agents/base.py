"""The part of an agent that is the same for DQN, PPO and REINFORCE: construction from
an env and a config, the optimizer (:func:`make_adam`) and the one update step
(:meth:`Agent._optimizer_step`), ``predict``, ``learn``'s frame (threads, logger,
callback), ``save`` / ``load`` and the checks that a model fits an env.

Checkpoint (``agent.save(dir)``): one dict saved with ``torch.save`` as
``dir/agent.pt`` and read back with ``torch.load(..., weights_only=True)`` (no pickle
of arbitrary objects): ``format``, ``version``, ``algo``, ``config`` (plain dict),
``observation_space`` / ``action_space`` (plain dicts), ``encoder`` (the backbone's
spec: kind, module arguments, observation layout), ``model`` (state dict of every
network), ``optimizer`` (state dict), ``num_timesteps``, ``schedule`` (the ``learn``
call the checkpoint belongs to: its first step and length, so a resumed call keeps the
same learning-rate / exploration schedule), ``rng`` (the agent's generator and torch's
global RNG state), ``extra`` (algorithm state, e.g. DQN's replay buffer when asked),
``versions``. ``dir/agent.json`` repeats everything but the tensors, for people;
``dir/agent.pt.sha256`` holds its SHA-256 (:mod:`stockgym.agents.integrity`), checked on
load, as are the keys and types above and that every weight, optimizer value and counter
is finite and in range (one ``ValueError`` line per problem).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from stockgym.agents.config import CommonConfig, make_config
from stockgym.agents.integrity import check_checkpoint, read_verified, write_with_digest
from stockgym.agents.monitor import Logger
from stockgym.agents.networks import (
    Net,
    encoder_spec,
    load_forecaster_weights,
    pretrained_spec,
)
from stockgym.agents.spaces import build_space, describe_space, layout_of, space_str
from stockgym.agents.vecenv import TorchVecEnv, as_torch_vec_env
from stockgym.core import resolve_device, torch_threads

FORMAT = "stockgym.agent"
VERSION = 1
CHECKPOINT = "agent.pt"

#: ``callback(agent, step) -> bool | None``: called after every update (PPO, REINFORCE) or
#: vector step (DQN); returning ``False`` stops training.
Callback = Callable[[Any, int], Any]


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``: every random draw an agent
    makes (actions, exploration, minibatches, replay samples) comes from it."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


#: devices whose float32 parameters Adam updates with PyTorch's fused kernel
FUSED_DEVICES = ("cpu", "cuda")


def make_adam(
    params: list[nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimizer of every agent: Adam (Kingma & Ba 2015) with ``eps = 1e-5``, or
    AdamW (decoupled weight decay, Loshchilov & Hutter 2019) when ``weight_decay > 0``.
    One fused kernel per step (``fused=True``) where every parameter is float32 on a
    :data:`FUSED_DEVICES` device, else one call per operation over all parameters
    (``foreach=True``); both compute the same update."""
    fused = all(p.device.type in FUSED_DEVICES and p.dtype == torch.float32 for p in params)
    cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    impl = {"fused": True} if fused else {"foreach": True}
    return cls(params, lr=lr, eps=1e-5, weight_decay=weight_decay, **impl)


def _own_step_counters(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter its own Adam step counter. A checkpoint may hold one ``step``
    tensor shared by all parameters (agents saved before the optimizer step was plain
    ``optimizer.step()`` did); ``torch.load`` keeps the sharing, and ``Adam.step`` would
    then add 1 to it once per parameter, so the bias corrections
    ``1 - beta^t`` would use a wrong ``t``."""
    seen: set[int] = set()
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                state["step"] = step.clone()
            seen.add(id(state["step"]))


class Agent:
    """Base class of :class:`~stockgym.agents.DQN`, :class:`~stockgym.agents.PPO` and
    :class:`~stockgym.agents.REINFORCE` (the shape stable-baselines3 users know).

    ``Algo(env, config=None, **overrides)``: ``env`` is a stockgym vector env, any
    Gymnasium env or vector env with a Box observation, or an env id; ``config`` an
    instance of ``Algo.Config``, a dict or ``None`` (defaults); keyword overrides are
    config fields. ``log_dir``: write TensorBoard scalars there while learning;
    ``progress``: show a progress bar.
    """

    algo = ""
    Config: type[CommonConfig] = CommonConfig

    def __init__(
        self,
        env: Any,
        config: Any = None,
        *,
        log_dir: str | Path | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> None:
        if env is None:
            raise ValueError(
                f"{type(self).__name__} needs an env (or {type(self).__name__}.load(dir))"
            )
        self._setup(env, make_config(self.Config, config, overrides), None)
        self.log_dir = log_dir
        self.progress = progress

    # ------------------------------------------------------------ construction
    def _setup(self, env: Any, config: CommonConfig, saved: dict[str, Any] | None) -> None:
        self.config = config
        self.device = resolve_device(config.device, kinds=None, env=env)
        self.env: TorchVecEnv | None = None
        self.num_timesteps = 0
        self.logger: Logger | None = None
        self._last_obs: torch.Tensor | None = None
        self._env_seeded = False
        #: the current (or last) ``learn`` call: ``{"start": step, "total": steps}``
        self.schedule: dict[str, int] | None = None
        if saved is None:
            venv = as_torch_vec_env(env, self.device, config.num_envs)
            self.observation_space = venv.single_observation_space
            self.action_space = venv.single_action_space
            self._check_action_space(self.action_space)
            layout = layout_of(venv.env)
            obs_dim = venv.obs_dim
            forecaster = None
            if config.pretrained:
                spec, forecaster = pretrained_spec(config.pretrained, obs_dim, layout)
            else:
                spec = encoder_spec(
                    obs_dim,
                    layout,
                    config.backbone,
                    config.hidden_size,
                    config.num_layers,
                    config.kernel_size,
                    config.activation,
                )
            self.encoder_spec = spec
            self.env = venv
        else:
            self.observation_space = build_space(saved["observation_space"])
            self.action_space = build_space(saved["action_space"])
            self.encoder_spec = saved["encoder"]
            forecaster = None
            if env is not None:
                self.set_env(env)
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(config.seed)
            self.nets = self._build().to(self.device)
        freeze = bool(config.pretrained) and config.freeze_pretrained
        for net in self.nets.modules():
            if isinstance(net, Net):
                if forecaster is not None:
                    load_forecaster_weights(net, forecaster)
                if freeze:
                    net.encoder.body.requires_grad_(False)
        self._after_build()
        self.generator = make_generator(config.seed, self.device)
        self.optimizer = self._make_optimizer()

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _check_action_space(self, space: spaces.Space) -> None:
        """Subclasses refuse action spaces they cannot act in (``ValueError``)."""

    def _build(self) -> nn.ModuleDict:
        raise NotImplementedError

    def _after_build(self) -> None:
        """Hook after the networks exist (e.g. copy the online net into the target)."""

    def _trainable(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (and gradient clipping sees)."""
        return [p for p in self.nets.parameters() if p.requires_grad]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self.params = self._trainable()
        return make_adam(self.params, self.config.learning_rate)

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _optimizer_step(self, max_grad_norm: float | None) -> None:
        """The one update step of every agent, after ``loss.backward()``: scale the
        gradients by ``min(1, max_grad_norm / (||g||_2 + 1e-6))`` (``g``: all trained
        parameters' gradients as one vector; ``None``: no clipping), then
        ``optimizer.step()``."""
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, max_grad_norm)
        self.optimizer.step()

    # ------------------------------------------------------------ env checks
    def set_env(self, env: Any) -> None:
        """Use ``env`` for learning; it must have the spaces and layout the model has
        (``ValueError`` naming both otherwise)."""
        venv = as_torch_vec_env(env, self.device, self.config.num_envs)
        self.check_env(venv)
        self.env = venv
        self._last_obs = None
        self._env_seeded = False

    def check_env(self, env: Any) -> None:
        """Raise ``ValueError`` if ``env``'s spaces or observation layout differ from the
        model's (the message names both)."""
        venv = env if isinstance(env, TorchVecEnv) else as_torch_vec_env(env, self.device, 1)
        mine = self._signature(
            describe_space(self.observation_space),
            describe_space(self.action_space),
            self.encoder_spec["layout"],
        )
        theirs = self._signature(
            describe_space(venv.single_observation_space),
            describe_space(venv.single_action_space),
            layout_of(venv.env),
        )
        check_fit(self.algo, self.encoder_spec["backbone"], mine, theirs)

    @staticmethod
    def _signature(obs: dict, act: dict, layout: dict | None) -> dict[str, Any]:
        lay = None
        if layout is not None:
            lay = {k: layout[k] for k in ("window", "n_assets", "n_features", "feature_names")}
        return {
            "observation space": {k: obs[k] for k in ("type", "shape")},
            "action space": act,
            "observation layout": lay,
        }

    # ------------------------------------------------------------ acting
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, None]:
        """``(action, None)`` for one observation ``(D,)`` or a batch ``(B, D)``.

        numpy in -> numpy out (a numpy integer for one Discrete observation, ready for
        ``env.step``); torch in -> torch out on the agent's device. Box actions are
        clipped (or tanh-squashed) into the action space. ``state`` and
        ``episode_start`` exist for stable-baselines3 compatibility and are ignored.
        """
        is_torch = isinstance(observation, torch.Tensor)
        x = observation if is_torch else torch.as_tensor(np.asarray(observation, dtype=np.float32))
        x = x.to(self.device, torch.float32)
        obs_dim = int(np.prod(self.observation_space.shape))
        single = x.dim() == len(self.observation_space.shape) and x.numel() == obs_dim
        if x.numel() % obs_dim:
            raise ValueError(
                f"observation of shape {tuple(x.shape)} does not fit the model's "
                f"observation space {self.observation_space}"
            )
        x = x.reshape(-1, obs_dim)
        with torch.no_grad():
            action = self._predict(x, deterministic)
        if is_torch:
            return (action[0] if single else action), None
        a = action.cpu().numpy()
        return (a[0] if single else a), None

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ learning
    def learn(
        self,
        total_timesteps: int,
        *,
        callback: Callback | None = None,
        log_dir: str | Path | None = None,
        progress: bool | None = None,
        resume: bool = False,
        purge_step: int | None = None,
    ) -> Agent:
        """Train for ``total_timesteps`` more env steps (all envs counted); returns self.

        ``callback(agent, step)`` runs after every update (PPO, REINFORCE) or vector step
        (DQN); ``agent.logger.scalar(tag, value, step)`` logs from it; returning ``False``
        stops training.

        ``resume=True`` finishes the ``learn(total_timesteps)`` call a loaded checkpoint
        was taken in (same schedules, stops at the same step as an uninterrupted call);
        ``purge_step`` makes TensorBoard drop events at or after that step left by an
        earlier, interrupted writer."""
        if self.env is None:
            raise ValueError(
                f"no env to learn in: {type(self).__name__}.load(dir, env=...) "
                "or agent.set_env(env)"
            )
        if (
            isinstance(total_timesteps, bool)
            or not isinstance(total_timesteps, (int, np.integer))
            or total_timesteps < 1
        ):
            raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
        total_timesteps = int(total_timesteps)
        if resume:
            if self.schedule is None:
                raise ValueError(
                    "resume=True needs an agent loaded from a checkpoint taken during learn()"
                )
            if self.schedule["total"] != total_timesteps:
                raise ValueError(
                    f"the checkpoint was taken in learn({self.schedule['total']}), "
                    f"not learn({total_timesteps})"
                )
        else:
            self.schedule = {"start": int(self.num_timesteps), "total": total_timesteps}
        log_dir = log_dir if log_dir is not None else self.log_dir
        progress = self.progress if progress is None else progress
        self.logger = Logger(
            log_dir,
            progress,
            total_timesteps,
            desc=self.algo,
            purge_step=purge_step,
            start_step=self.schedule["start"],
            initial=self.num_timesteps - self.schedule["start"],
        )
        try:
            with torch_threads(self.config.threads):
                self._learn(total_timesteps, callback)
        finally:
            self.logger.close()
        return self

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        """Train until ``num_timesteps - schedule["start"] >= total_timesteps``."""
        raise NotImplementedError

    def _reset_env(self) -> torch.Tensor:
        """The current observation; resets the env when there is none."""
        if self._last_obs is None:
            self._last_obs = self._env_reset()
        return self._last_obs

    def _env_reset(self) -> torch.Tensor:
        """Reset the env: seeded with ``config.seed`` the first time, then continuing
        its own random streams."""
        obs = self.env.reset(seed=None if self._env_seeded else self.config.seed)
        self._env_seeded = True
        return obs

    # ------------------------------------------------------------ save / load
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def meta(self) -> dict[str, Any]:
        """Everything in the checkpoint except tensors (JSON-able)."""
        import stockgym

        return {
            "format": FORMAT,
            "version": VERSION,
            "algo": self.algo,
            "config": self.config.to_dict(),
            "observation_space": describe_space(self.observation_space),
            "action_space": describe_space(self.action_space),
            "encoder": self.encoder_spec,
            "num_timesteps": int(self.num_timesteps),
            "schedule": self.schedule,
            "versions": {"stockgym": stockgym.__version__, "torch": str(torch.__version__)},
        }

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict (see the module docstring): tensors on the CPU and plain
        Python values only, so ``torch.load(..., weights_only=True)`` reads it."""
        ckpt = self.meta()
        ckpt.update(
            model={k: v.detach().cpu() for k, v in self.nets.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng={"generator": self.generator.get_state().cpu(), "torch": torch.get_rng_state()},
            extra=self._extra_state(),
        )
        return ckpt

    def save(self, path: str | Path) -> Path:
        """Write ``path/agent.pt`` (and ``agent.json``) atomically; ``path`` is created
        if needed."""
        from stockgym.forecasters import storage

        path = Path(path)
        write_with_digest(path / CHECKPOINT, to_bytes(self.checkpoint()))
        storage.write_json(path / "agent.json", self.meta())
        return path

    @classmethod
    def load(
        cls, path: str | Path, env: Any = None, device: str = "auto", **config_overrides: Any
    ) -> Agent:
        """Load a saved agent (a dir holding ``agent.pt``, the file, or a ``stockgym
        train`` run dir). With ``env`` the model is checked against it and can keep
        learning; without, it can ``predict``. ``config_overrides`` change config fields
        (e.g. ``learning_rate`` to fine-tune)."""
        return cls.from_checkpoint(
            read_checkpoint(path), env, device, str(path), **config_overrides
        )

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: dict[str, Any],
        env: Any = None,
        device: str = "auto",
        path: str = "checkpoint",
        **config_overrides: Any,
    ) -> Agent:
        """The agent of a checkpoint dict (:meth:`checkpoint`, as :meth:`load` reads it);
        ``path`` names it in errors."""
        check_checkpoint(ckpt, path)
        if cls.algo and ckpt["algo"] != cls.algo:
            raise ValueError(
                f"{path} holds a {ckpt['algo'].upper()} model, not {cls.algo.upper()} "
                f"(use {ckpt['algo'].upper()}.load or stockgym.agents.load_agent)"
            )
        target = cls if cls.algo else _algo_class(ckpt["algo"])
        config = target.Config.from_dict({**ckpt["config"], "device": device, **config_overrides})
        agent = target.__new__(target)
        agent.log_dir, agent.progress = None, False
        try:
            agent._setup(env, config, ckpt)
        except (KeyError, TypeError, IndexError) as exc:  # plain dicts that lack a field
            raise ValueError(
                f"{path}: its spaces or encoder spec are malformed (missing or wrong {exc})"
            ) from None
        try:
            agent.nets.load_state_dict(ckpt["model"])
            agent.optimizer.load_state_dict(ckpt["optimizer"])
            _own_step_counters(agent.optimizer)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{path}: weights do not fit the {target.__name__} networks: {exc}"
            ) from exc
        agent.num_timesteps = int(ckpt["num_timesteps"])
        agent.schedule = ckpt.get("schedule")
        try:
            agent.generator.set_state(ckpt["rng"]["generator"])
        except RuntimeError:  # saved on another device type: keep the fresh seeded generator
            pass
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: 'rng' has no generator state ({exc!r})") from None
        for group in agent.optimizer.param_groups:  # a fine-tuning override wins
            group["lr"] = config.learning_rate
        agent._load_extra_state(ckpt.get("extra", {}))
        return agent


def to_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into bytes (for an atomic write)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoint_file(path: str | Path) -> Path:
    """``agent.pt`` inside ``path`` (a model dir, a run dir with ``model/``, or the file)."""
    path = Path(path)
    for cand in (path, path / CHECKPOINT, path / "model" / CHECKPOINT):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no saved agent at {path} (looked for {CHECKPOINT} and model/{CHECKPOINT})"
    )


def read_checkpoint(path: str | Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The checkpoint dict, loaded safely (``weights_only=True``) and checked (``fmt``:
    the expected ``format`` field; a run's training checkpoint has its own)."""
    file = checkpoint_file(path) if fmt == FORMAT else Path(path)
    data = read_verified(file)  # a corrupt file is refused before torch reads it
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"cannot read agent checkpoint {file}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise ValueError(
            f"{file} is not a stockgym {'agent' if fmt == FORMAT else 'run'} checkpoint"
        )
    if ckpt.get("version") != VERSION:
        raise ValueError(
            f"{file} has checkpoint version {ckpt.get('version')}, this stockgym "
            f"reads version {VERSION}"
        )
    return ckpt


def _algo_class(name: str) -> type[Agent]:
    from stockgym.agents import ALGOS

    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r} in checkpoint; known: {sorted(ALGOS)}")
    return ALGOS[name]


def load_agent(path: str | Path, env: Any = None, device: str = "auto") -> Agent:
    """Load whichever of our agents (DQN, PPO, REINFORCE) ``path`` holds, from
    ``agent.pt`` read with ``weights_only=True``. Never opens a zip: stable-baselines3
    models are loaded only through a run's record (:func:`stockgym.experiment.load_run`)."""
    return Agent.load(path, env=env, device=device)


def check_fit(algo: str, backbone: str, mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """``ValueError`` naming what differs between a model's signature and an env's
    (:meth:`Agent._signature`: spaces and observation layout), showing both."""
    problems = [k for k in mine if mine[k] != theirs[k]]
    if problems:
        raise ValueError(
            f"the {algo.upper()} model (backbone {backbone}) does not fit this env: its "
            f"{' and '.join(problems)} {'differs' if len(problems) == 1 else 'differ'}.\n"
            f"  model: {_fmt_sig(mine)}\n  env:   {_fmt_sig(theirs)}"
        )


def _fmt_sig(sig: dict[str, Any]) -> str:
    obs, act, lay = sig["observation space"], sig["action space"], sig["observation layout"]
    text = f"observation Box{tuple(obs['shape'])}, action {space_str(act)}"
    if lay is not None:
        text += (
            f", layout window={lay['window']} assets={lay['n_assets']} "
            f"features={json.dumps(lay['feature_names'])}"
        )
    else:
        text += ", no stockgym layout"
    return text
