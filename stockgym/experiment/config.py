"""A run's configuration: :class:`TrainConfig` (with :class:`DataSpec` and
:class:`EnvSpec`), the defaults a stock-trading run starts from, and TOML in and out
(read by :mod:`tomllib`, written by ``tomli-w``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stockgym.core import check_int

ALGO_NAMES = (
    "dqn",
    "ppo",
    "reinforce",
    "a2c",
    "qlearning",
    "sb3-ppo",
    "sb3-dqn",
    "sb3-a2c",
)  # sb3-*: stockgym.agents.sb3

#: Hyperparameters a stock-trading run starts from (``[agent]`` values win). Daily log
#: returns are ~0.01, so rewards are scaled to percent; an action mostly pays off on the
#: next bar, so a short horizon (gamma 0.9) learns faster. PPO uses the tanh MLP with
#: orthogonal init (an mlp-backbone default only: :meth:`TrainConfig.agent_config` drops
#: it for other backbones and pretrained encoders) and no value clipping (returns in
#: percent are several units; a clipped value loss would move only ``clip_coef`` per
#: update). How these were chosen, with the measurements: docs/benchmarks.md.
STOCK_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "reward_scale": 100.0,
        "gamma": 0.9,
        "learning_rate": 1e-3,
        "num_steps": 16,
        "activation": "tanh",
        "clip_vloss": False,
    },
    "dqn": {
        "reward_scale": 100.0,
        "gamma": 0.9,
        "learning_rate": 1e-3,
        "learning_starts": 2000,
        "train_frequency": 8,
        "batch_size": 128,
        "target_update_interval": 250,
        "exploration_fraction": 0.3,
        "weight_decay": 1.0,
    },
    "reinforce": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 3e-3},
    "a2c": {
        "reward_scale": 100.0,
        "gamma": 0.9,
        "learning_rate": 1e-3,
        "num_steps": 5,
        "activation": "tanh",
    },
    "qlearning": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 0.05},
}
#: Training envs per algorithm when ``env.num_envs`` is not given (REINFORCE updates once
#: per batch of one episode per env, so fewer envs mean more updates per step).
DEFAULT_NUM_ENVS = {
    "ppo": 64,
    "dqn": 32,
    "reinforce": 8,
    "a2c": 16,
    "qlearning": 8,
    "sb3-ppo": 8,
    "sb3-dqn": 8,
    "sb3-a2c": 8,
}
#: ``StockTradingEnv`` keywords a run's ``[env]`` table may set (besides ``features``,
#: ``scaler``, ``num_envs`` and ``episode_length``).
ENV_KEYS = (
    "window_size",
    "action_type",
    "positions",
    "allow_short",
    "max_gross",
    "market",
    "commission",
    "sell_tax",
    "slippage_bps",
    "min_commission",
    "borrow_rate",
    "board",
    "price_limit",
    "ticks",
    "max_participation",
    "impact",
    "impact_coef",
    "fill",
    "fractional",
    "reward",
    "initial_cash",
)


@dataclass
class DataSpec:
    """Which prices (``load_prices``) and how to split them.

    ``symbols`` (one or more), ``source`` (``auto | fdr | csv | sample | synthetic``),
    ``start`` / ``end`` (inclusive dates), ``options`` (the synthetic source's options:
    ``kind``, ``edge``, ``seed``, ``n_days``...), ``cache_dir`` (finance-datareader),
    ``train_end`` / ``valid_end`` (inclusive; neither: the default 64/16/20 split).
    """

    symbols: list[str] = field(default_factory=list)
    source: str = "auto"
    start: str | None = None
    end: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    train_end: str | None = None
    valid_end: str | None = None


@dataclass
class EnvSpec:
    """The trading env: ``features`` (``None``: ``stockgym.data.DEFAULT_FEATURES``),
    ``scaler`` (``standard | minmax | robust | none``, fitted on the training period),
    ``num_envs`` (training envs stepped together; ``None``: :data:`DEFAULT_NUM_ENVS` of
    the algorithm), ``episode_length`` (training episode length in bars, random starts;
    ``None``: the whole training period), ``forecasts`` (walk-forward forecast features,
    ``[env.forecasts]``: :class:`~stockgym.experiment.forecasts.ForecastSpec`'s fields;
    ``None``: none), ``autoencoder`` (walk-forward autoencoder features,
    ``[env.autoencoder]``: :class:`~stockgym.forecasters.autoencoder.AutoencoderConfig`'s
    fields; ``None``: none), ``compile`` (the training vector env's step through
    ``torch.compile``: a one-off 5-20 s, then about 3x faster steps on the CPU at 64
    envs; worth it for runs of a million steps and more, docs/benchmarks.md), and any
    ``StockTradingEnv`` keyword in :data:`ENV_KEYS` (``window_size``, ``market``...)."""

    features: list[str] | None = None
    scaler: str = "standard"
    num_envs: int | None = None
    episode_length: int | None = 100
    window_size: int = 30
    action_type: str = "discrete"
    positions: list[float] | None = None
    allow_short: bool = False
    max_gross: float = 1.0
    market: str = "auto"
    commission: float | None = None
    sell_tax: float | None = None
    slippage_bps: float | None = None
    min_commission: float | None = None
    borrow_rate: float | None = None
    board: str | None = None
    price_limit: bool | None = None
    ticks: bool | None = None
    max_participation: float | None = None
    impact: str | None = None
    impact_coef: float | None = None
    fill: str = "open"
    fractional: bool = False
    reward: str = "log_return"
    initial_cash: float = 10_000_000.0
    forecasts: dict[str, Any] | None = None
    autoencoder: dict[str, Any] | None = None
    compile: bool = False

    def env_kwargs(self) -> dict[str, Any]:
        """``StockTradingEnv`` keywords (JSON-able; ``features`` resolved by the caller)."""
        return {k: getattr(self, k) for k in ENV_KEYS}


@dataclass
class TrainConfig:
    """One training run. TOML layout (``--config``)::

        algo = "ppo"              # dqn | ppo | reinforce | a2c | qlearning | sb3-ppo | sb3-dqn | sb3-a2c
        total_timesteps = 200000
        seed = 0
        device = "auto"
        eval_freq = 20000         # env steps between validation backtests (0: only at the end)
        checkpoint_freq = 20000   # env steps between checkpoints (0: none; --resume restarts)
        run_dir = "runs/ppo-aapl" # default: a new runs/agents/<time>-<algo>-<symbols>

        [data]                    # DataSpec
        symbols = ["AAPL"]
        source = "sample"

        [env]                     # EnvSpec
        window_size = 30
        market = "us"

        [env.forecasts]           # walk-forward forecast features (optional)
        model = "lstm"
        horizon = [1, 5]

        [agent]                   # the algorithm's config (PPOConfig, DQNConfig, ...)
        backbone = "lstm"
        learning_rate = 3e-4

    ``seed`` and ``device`` are the agent's; ``env.num_envs`` is its number of envs;
    ``[agent]`` starts from :data:`STOCK_DEFAULTS`.
    """

    algo: str = "ppo"
    total_timesteps: int = 100_000
    seed: int = 0
    device: str = "auto"
    eval_freq: int = 20_000
    checkpoint_freq: int = 20_000
    run_dir: str | None = None
    progress: bool = False
    tensorboard: bool = True
    data: DataSpec = field(default_factory=DataSpec)
    env: EnvSpec = field(default_factory=EnvSpec)
    agent: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts (as TOML gives them); unknown keys raise ``ValueError``."""
        data = dict(data)
        _no_unknown("config", data, cls)
        data["data"] = sub_spec(DataSpec, data.get("data"), "data")
        data["env"] = sub_spec(EnvSpec, data.get("env"), "env")
        agent = data.get("agent") or {}
        if not isinstance(agent, dict):
            raise ValueError(f"[agent] must be a table of hyperparameters, got {agent!r}")
        data["agent"] = dict(agent)
        config = cls(**data)
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # -------------------------------------------------------------- checks
    def agent_config(self) -> Any:
        """The algorithm's config object (``ValueError`` naming a bad field)."""
        from stockgym.agents import ALGOS

        if self.algo.startswith("sb3-"):  # stable-baselines3: SB3's arguments + ours
            from stockgym.agents.sb3_config import sb3_config

            return sb3_config(
                self.algo, self.agent, seed=self.seed, device=self.device, num_envs=self.num_envs
            )
        cls = ALGOS[self.algo].Config
        for key in ("seed", "device", "num_envs"):
            if key in self.agent:
                raise ValueError(
                    f"set {key} at the top level of the config (or [env] for "
                    f"num_envs), not in [agent]"
                )
        defaults = STOCK_DEFAULTS[self.algo]
        if self.agent.get("backbone", "mlp") != "mlp" or self.agent.get("pretrained"):
            # ``activation`` is the new mlp backbone's (CommonConfig refuses it elsewhere)
            defaults = {k: v for k, v in defaults.items() if k != "activation"}
        return cls.from_dict(
            {
                **defaults,
                **self.agent,
                "seed": self.seed,
                "device": self.device,
                "num_envs": self.num_envs,
            }
        )

    @property
    def num_envs(self) -> int:
        """``env.num_envs``, or the algorithm's default."""
        return self.env.num_envs or DEFAULT_NUM_ENVS.get(self.algo, 32)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field (before anything is loaded)."""
        if self.algo not in ALGO_NAMES:
            raise ValueError(f"algo must be one of {ALGO_NAMES}, got {self.algo!r}")
        check_int("total_timesteps", self.total_timesteps, 1)
        check_int("eval_freq", self.eval_freq, 0)
        check_int("checkpoint_freq", self.checkpoint_freq, 0)
        check_int("seed", self.seed, None)
        d, e = self.data, self.env
        if isinstance(d.symbols, str):
            d.symbols = [d.symbols]
        if not d.symbols or not all(isinstance(s, str) and s for s in d.symbols):
            raise ValueError(f"data.symbols must name at least one symbol, got {d.symbols!r}")
        from stockgym.data.sources import SOURCES

        if d.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {d.source!r}")
        if d.options and d.source != "synthetic":
            raise ValueError(f"data.options {sorted(d.options)} only apply to source 'synthetic'")
        if (d.train_end is None) != (d.valid_end is None):
            raise ValueError("give both data.train_end and data.valid_end, or neither")
        from stockgym.data.scaling import KINDS

        if e.scaler not in (*KINDS, "none"):
            raise ValueError(f"env.scaler must be one of {(*KINDS, 'none')}, got {e.scaler!r}")
        if e.num_envs is not None:
            check_int("env.num_envs", e.num_envs, 1)
        if e.episode_length is not None:
            check_int("env.episode_length", e.episode_length, 1)
        if e.forecasts is not None:
            from stockgym.experiment.forecasts import ForecastSpec

            e.forecasts = ForecastSpec.from_any(e.forecasts).to_dict()
            ForecastSpec.from_any(e.forecasts).validate()
        if e.autoencoder is not None:
            from stockgym.forecasters.autoencoder import AutoencoderConfig

            if not isinstance(e.autoencoder, dict):
                raise ValueError(f"[env.autoencoder] must be a table, got {e.autoencoder!r}")
            e.autoencoder = AutoencoderConfig.from_dict(e.autoencoder).to_dict()
        self.agent_config()


def _no_unknown(name: str, data: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; known: {', '.join(sorted(known))}")


def sub_spec(cls: type, value: Any, name: str) -> Any:
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ValueError(f"[{name}] must be a table, got {value!r}")
    _no_unknown(f"[{name}]", value, cls)
    return cls(**value)


# ------------------------------------------------------------------ TOML
def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file (``ValueError`` naming the file and the problem)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read TOML config {path}: {exc}") from exc


def load_config(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a TOML file."""
    try:
        return TrainConfig.from_dict(read_toml(path))
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``1e-3``, ``true``, ``["a", "b"]``), else the string."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``dotted = "a.b"`` (tables created as needed)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ValueError(f"bad key {dotted!r}; use e.g. agent.learning_rate or env.window_size")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"{dotted}: {p} is not a table")
    node[parts[-1]] = value


def to_toml(data: dict[str, Any]) -> str:
    """A config dict as TOML (``tomli-w``); ``None`` values are left out (TOML has no
    null: absent means the default), numpy scalars become Python numbers, and a
    non-finite float is refused (``ValueError``) rather than written as ``nan``."""
    import tomli_w

    return tomli_w.dumps(_toml_ready_value(data))


def _toml_ready_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _toml_ready_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return float(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"cannot write {type(value).__name__} {value!r} to TOML")


def config_toml(config: TrainConfig) -> str:
    """``config`` as the TOML that re-runs it (``stockgym train --config``)."""
    d = config.to_dict()
    d.pop("progress", None)
    return to_toml(d)
