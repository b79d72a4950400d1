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
``to_dict()`` or :func:`~stockgym.agents.spaces.layout_of`'s dict) must be given for
``cnn`` / ``lstm``; without it ``mlp`` reads the whole observation as one row.

Training runs: :func:`stockgym.experiment.train` trains an
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
them, which can run arbitrary code. So ``save`` writes ``sb3.zip.sig`` (an HMAC-SHA256
keyed by this user's secret, :mod:`stockgym.agents.integrity`) and ``sb3.zip.sha256``
beside the zip, and :meth:`SB3Agent.load` refuses a zip without this user's signature
before anything is unpickled, unless ``trust=True`` (``--trust`` on the command line).
Our own agents' ``agent.pt`` files are read with ``weights_only=True`` instead.

Not supported for SB3 runs: ``stockgym train --resume`` (SB3 writes no
optimizer/RNG/env checkpoint; ``checkpoint_freq`` only re-saves ``model/sb3.zip``, so an
interrupted run can still be backtested).
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

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
        "stable-baselines3 is not installed: pip install 'stockgym[sb3]' (from a checkout: "
        "pip install -e '.[sb3]'); needed by stockgym.agents.sb3 and the sb3-* algorithms"
    ) from exc

from stockgym.agents.integrity import check_fields, read_verified, write_with_digest
from stockgym.agents.monitor import EpisodeStats, Logger, SPSMeter
from stockgym.agents.networks import Encoder, encoder_spec, pretrained_spec
from stockgym.agents.sb3_config import SB3_ALGOS, SB3Config, algo_class
from stockgym.agents.spaces import describe_space, layout_of
from stockgym.core import torch_threads

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
        return {
            "window": int(layout["window"]),
            "n_assets": int(layout["n_assets"]),
            "n_features": int(layout["n_features"]),
            "symbols": list(layout.get("symbols", ())),
            "feature_names": list(layout.get("feature_names", ())),
        }
    found = find_layout(layout)
    if found is None:
        raise ValueError(
            f"cannot find a stockgym observation layout in {type(layout).__name__}; "
            "pass env.unwrapped.obs_layout (or its to_dict())"
        )
    return found


def find_layout(obj: Any) -> dict[str, Any] | None:
    """The stockgym observation layout of an ``ObsLayout``, a single or vector env, an
    ``SB3VecEnv`` or an SB3 ``VecEnv`` of stockgym envs (``None`` if there is none)."""
    if hasattr(obj, "to_dict") and hasattr(obj, "window"):  # an ObsLayout
        return _layout_dict(obj.to_dict())
    for cand in (
        obj,
        getattr(obj, "venv", None),
        getattr(getattr(obj, "venv", None), "venv", None),
    ):
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

    ``backbone``: ``mlp | cnn | lstm | gru | tcn | transformer``; ``hidden_size``, ``num_layers``, ``kernel_size``
    (cnn): the :mod:`stockgym.forecasters` module's size; ``layout``: the env's
    observation layout (``ObsLayout``, dict or env; needed for cnn / lstm); ``spec``:
    a full :class:`~stockgym.agents.networks.Encoder` spec instead of the above (a
    pretrained forecaster's). ``features_dim`` = the encoding size + n_assets + 1
    (with a layout) or ``hidden_size`` (without).
    """

    default_backbone = "mlp"

    def __init__(
        self,
        observation_space: spaces.Box,
        backbone: str | None = None,
        hidden_size: int = 64,
        num_layers: int = 2,
        kernel_size: int = 3,
        layout: Any = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(
                f"{type(self).__name__} reads a flat Box observation, got {observation_space}"
            )
        obs_dim = int(np.prod(observation_space.shape))
        if spec is None:
            backbone = self._backbone(backbone)
            spec = encoder_spec(
                obs_dim, _layout_dict(layout), backbone, hidden_size, num_layers, kernel_size
            )
        elif spec.get("obs_dim") != obs_dim:
            raise ValueError(
                f"encoder spec reads {spec.get('obs_dim')} values, the observation has {obs_dim}"
            )
        encoder = Encoder(spec)
        super().__init__(observation_space, features_dim=encoder.out_dim)
        self.encoder = encoder
        self.spec = spec

    def _backbone(self, backbone: str | None) -> str:
        fixed = type(self).default_backbone
        if backbone is None:
            return fixed
        if type(self) is not StockFeatures and backbone != fixed:
            raise ValueError(
                f"{type(self).__name__} is the {fixed} backbone; use "
                f"StockFeatures(backbone={backbone!r}) for another"
            )
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


def stock_policy_kwargs(
    env: Any,
    backbone: str = "mlp",
    hidden_size: int = 64,
    num_layers: int = 2,
    kernel_size: int = 3,
    **policy_kwargs: Any,
) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` that put a stockgym backbone (:class:`StockFeatures`) in front
    of the policy, with ``env``'s observation layout (plain values only, so they save
    into SB3's zip as data). Extra keywords (``net_arch``...) are passed through."""
    layout = find_layout(env)
    if layout is None and backbone != "mlp":
        raise ValueError(
            f"backbone {backbone!r} needs a stockgym env (an obs_layout); "
            f"{type(env).__name__} has none: use backbone='mlp'"
        )
    return {
        "features_extractor_class": StockFeatures,
        "features_extractor_kwargs": {
            "backbone": backbone,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "kernel_size": kernel_size,
            "layout": layout,
        },
        **policy_kwargs,
    }


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

    #: no optimizer / RNG / env state is saved: an SB3 run cannot resume
    resumable = False

    def __init__(self, model: Any, config: SB3Config, layout: dict[str, Any] | None) -> None:
        self.model = model
        self.config = config
        self.algo = config.algo
        self.layout = layout
        self.log_dir: str | Path | None = None
        self.progress = False
        self.logger: Logger | None = None

    def learn(
        self,
        total_timesteps: int,
        *,
        callback: Any = None,
        log_dir: str | Path | None = None,
        progress: bool | None = None,
        resume: bool = False,
        purge_step: int | None = None,
    ) -> SB3Agent:
        """SB3's ``learn`` with our agents' face: ``callback(agent, step)`` after every
        env step (returning ``False`` stops); ``charts/episodic_return``,
        ``charts/episodic_length``, ``charts/portfolio_value`` (the mean over the envs
        whose episode ended on that step of its final value, before the autoreset),
        ``charts/SPS`` and the callback's ``agent.logger.scalar`` into TensorBoard at
        ``log_dir`` beside SB3's own scalars; progress as our agents show it (a bar on a
        terminal, a line every 10 % of the budget otherwise, after each rollout)."""
        if resume:
            raise ValueError(
                "stable-baselines3 runs cannot resume (no optimizer, RNG or env state is saved)"
            )
        from stable_baselines3.common.logger import Logger as SB3Logger
        from stable_baselines3.common.logger import TensorBoardOutputFormat

        log_dir = log_dir if log_dir is not None else self.log_dir
        progress = self.progress if progress is None else progress
        self.logger = Logger(
            log_dir, progress, total_timesteps, desc=self.algo, purge_step=purge_step
        )
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            fmt = TensorBoardOutputFormat(str(log_dir))
            self.model.set_logger(SB3Logger(str(log_dir), [fmt]))
        else:
            self.model.set_logger(SB3Logger(None, []))
        stats = EpisodeStats(1, torch.device("cpu"))
        sps = SPSMeter(0)  # SB3's learn counts its steps from 0 (reset_num_timesteps)
        shown_at = -math.inf  # when show() last ran

        def on_step(infos: list[dict[str, Any]], step: int) -> bool:
            ended = [info for info in infos if info.get("episode") is not None]
            if ended:
                values = [info["portfolio_value"] for info in ended if "portfolio_value" in info]
                stats.add(
                    [float(info["episode"]["r"]) for info in ended],
                    [int(info["episode"]["l"]) for info in ended],
                    [float(v) for v in values] if len(values) == len(ended) else None,
                    at=step,
                )
                self.logger.episodes(stats)
            # a terminal bar moves between rollouts too (PPO's can take seconds); at most
            # once a second, so the bar's redraws and SPS points stay few
            if self.logger.bar is not None and time.perf_counter() - shown_at >= 1.0:
                show(step)
            return callback is None or callback(self, step) is not False

        def show(step: int) -> None:
            nonlocal shown_at
            shown_at = time.perf_counter()
            if step > 0:
                self.logger.progress(step, sps(step), stats)

        try:
            with torch_threads(self.config.threads):
                self.model.learn(
                    total_timesteps,
                    callback=_StepCallback(on_step, show),
                )
        finally:
            self.logger.close()
            self.model.logger.close()
        return self

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

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """``(action, state)`` as SB3's ``predict``; one Discrete observation gives a
        numpy integer (ready for ``env.step``); torch in -> torch out."""
        is_torch = isinstance(observation, torch.Tensor)
        obs = (
            observation.detach().cpu().numpy()
            if is_torch
            else np.asarray(observation, dtype=np.float32)
        )
        action, state = self.model.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
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
        mine = sig(
            describe_space(self.observation_space), describe_space(self.action_space), self.layout
        )
        theirs = sig(describe_space(obs_space), describe_space(act_space), find_layout(env))
        check_fit(self.algo, self.config.backbone, mine, theirs)

    def meta(self) -> dict[str, Any]:
        """What ``agent.json`` holds (JSON-able)."""
        import stockgym

        return {
            "format": FORMAT,
            "version": VERSION,
            "algo": self.algo,
            "sb3_class": SB3_ALGOS[self.algo],
            "model_file": MODEL_FILE,
            "config": self.config.to_dict(),
            "observation_space": describe_space(self.observation_space),
            "action_space": describe_space(self.action_space),
            "layout": self.layout,
            "num_timesteps": self.num_timesteps,
            "versions": {
                "stockgym": stockgym.__version__,
                "stable-baselines3": stable_baselines3.__version__,
                "torch": str(torch.__version__),
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path/sb3.zip`` (SB3's own format, without the replay buffer) and
        ``path/agent.json`` atomically, with the zip's SHA-256 and this user's signature
        beside it; ``path`` is created if needed."""
        from stockgym.forecasters import storage

        path = Path(path)
        buf = io.BytesIO()
        self.model.save(buf)
        write_with_digest(path / MODEL_FILE, buf.getvalue(), signed=True)
        storage.write_json(path / META_FILE, self.meta())
        return path

    @classmethod
    def load(
        cls, path: str | Path, env: Any = None, device: str = "auto", trust: bool = False
    ) -> SB3Agent:
        """Load a saved SB3 agent (a dir holding ``sb3.zip``, a run dir with
        ``model/sb3.zip``, or the zip itself) through SB3's own loader.

        An SB3 zip holds pickled Python objects and unpickling one can run arbitrary
        code: the zip is loaded only when ``sb3.zip.sig`` holds this user's signature of
        it (written by :meth:`save`), else
        :class:`~stockgym.agents.integrity.UntrustedFileError`; ``trust=True`` loads an
        unsigned zip (only files you trust). A zip that fails its ``sb3.zip.sha256`` is
        refused either way."""
        zip_file = sb3_model_file(path)
        if zip_file is None:
            raise FileNotFoundError(
                f"no SB3 model at {path} (looked for {MODEL_FILE} and model/{MODEL_FILE})"
            )
        meta_file = zip_file.parent / META_FILE
        from stockgym.forecasters import storage

        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{zip_file} has no {META_FILE} next to it (it says which "
                "SB3 algorithm to load it with)"
            )
        meta = storage.read_json(meta_file, "SB3 agent description (agent.json)")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file} does not describe a stockgym SB3 agent")
        check_fields(meta, {"algo": (str, True), "config": (dict, True)}, str(meta_file))
        data = read_verified(zip_file, signed=True, trust=trust)  # before any unpickling
        config = SB3Config.from_dict(meta["config"])
        try:
            model = algo_class(meta["algo"]).load(io.BytesIO(data), env=env, device=device)
        except (ValueError, KeyError, RuntimeError, OSError, EOFError) as exc:
            raise ValueError(f"cannot load SB3 model {zip_file}: {exc}") from exc
        return cls(model, config, meta.get("layout"))


class _StepCallback(BaseCallback):
    """Calls ``fn(infos, num_timesteps)`` after every env step (``False`` stops) and
    ``rollout_end(num_timesteps)`` after every rollout."""

    def __init__(self, fn: Any, rollout_end: Any) -> None:
        super().__init__(verbose=0)
        self.fn = fn
        self.rollout_end = rollout_end

    def _on_step(self) -> bool:
        return self.fn(self.locals.get("infos") or [], int(self.model.num_timesteps))

    def _on_rollout_end(self) -> None:
        self.rollout_end(int(self.model.num_timesteps))


def sb3_model_file(path: str | Path) -> Path | None:
    """``sb3.zip`` at ``path`` (the file, a model dir or a run dir), or ``None``."""
    path = Path(path)
    for cand in (path, path / MODEL_FILE, path / "model" / MODEL_FILE):
        if cand.is_file() and cand.suffix == ".zip":
            return cand
    return None


def load_sb3(
    path: str | Path, env: Any = None, device: str = "auto", trust: bool = False
) -> SB3Agent:
    """:meth:`SB3Agent.load` (signed zips only unless ``trust``: SB3 zips are unpickled)."""
    return SB3Agent.load(path, env=env, device=device, trust=trust)


def make_agent(venv: Any, config: SB3Config) -> SB3Agent:
    """A new SB3 model for ``config`` training on ``venv`` (a
    :class:`~stockgym.envs.VectorStockTradingEnv`, through ``SB3VecEnv``). SB3's own
    refusals (an action space the algorithm cannot handle, bad sizes) become
    ``ValueError`` naming the algorithm."""
    from stockgym.agents.networks import load_forecaster_weights
    from stockgym.core import resolve_device
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
        extractor = {
            "backbone": config.backbone,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_layers,
            "kernel_size": config.kernel_size,
            "layout": layout,
        }
    kwargs = dict(config.sb3)
    policy_kwargs = {
        **(kwargs.pop("policy_kwargs", None) or {}),
        "features_extractor_class": StockFeatures,
        "features_extractor_kwargs": extractor,
    }
    device = str(resolve_device(config.device))
    try:
        model = algo_class(config.algo)(
            "MlpPolicy",
            env,
            seed=config.seed,
            device=device,
            verbose=0,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )
    except (AssertionError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{config.algo} ({SB3_ALGOS[config.algo]}) cannot be built with this config: {exc}"
        ) from exc
    if forecaster is not None:
        for mod in model.policy.modules():
            if isinstance(mod, StockFeatures):
                load_forecaster_weights(mod, forecaster)
                if config.freeze_pretrained:
                    mod.encoder.body.requires_grad_(False)
    return SB3Agent(model, config, layout)


__all__ = [
    "CNNFeatures",
    "LSTMFeatures",
    "MLPFeatures",
    "SB3Agent",
    "StockFeatures",
    "find_layout",
    "load_sb3",
    "make_agent",
    "stock_policy_kwargs",
]
