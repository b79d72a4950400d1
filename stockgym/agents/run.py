"""``train(config)``: one reproducible experiment from data to a run directory.

Steps: load the data the config names; split it by date (default: test = last 20 %,
validation = last 20 % of the rest); fit the feature scaler on the training period only
(or take a pretrained forecaster's features, window and scaler); train the agent on a
:class:`~stockgym.envs.VectorStockTradingEnv` over the training period; evaluate it
periodically on the validation period with :func:`stockgym.backtest.run_policy`
(deterministic actions, the run's costs); save the final model. The test period is
never touched here (``stockgym backtest --model RUN_DIR`` does that, once).

Run directory (created when training starts, so TensorBoard can follow it live):

``config.json``
    ``config`` (the resolved :class:`TrainConfig`), ``agent`` (the algorithm's resolved
    hyperparameters), ``splits`` (dates), ``data`` (source, symbols, first/last date,
    rows, SHA-256 of the prices), ``env`` (the resolved env: costs, features...),
    ``env_kwargs`` (what rebuilds it), ``forecaster`` (pretrained dir, or null),
    ``device``, ``versions``, ``git`` (commit of the source tree, if any), ``created``.
``config.toml``
    the resolved config as TOML: ``stockgym train --config RUN/config.toml`` re-runs it.
``scaler.json``
    the feature scaler (fitted on the training period).
``tensorboard/``
    scalars (see ``docs/agents.md``); ``eval/return``, ``eval/sharpe``,
    ``eval/excess_return`` on the validation period.
``model/``
    the final agent (``agent.pt``, ``agent.json``).
``summary.json``
    steps, seconds, steps per second, recent training returns, every validation result.

A run that fails before training starts leaves nothing behind; one that fails during
training removes its directory; an interrupted one (Ctrl-C) keeps it, with the model so
far and ``"interrupted": true`` in the summary.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.agents.common import _check_int

ALGO_NAMES = ("dqn", "ppo", "reinforce", "sb3-ppo", "sb3-dqn", "sb3-a2c")  # sb3-*: stockgym.agents.sb3

#: Hyperparameters a stock-trading run starts from (``[agent]`` values win). Daily log
#: returns are ~0.01, so rewards are scaled to percent; an action mostly pays off on the
#: next bar, so a short horizon (gamma 0.9) learns faster. These are the settings the
#: synthetic-edge learning tests (tests/test_agents_edge.py) run with.
#:
#: PPO (with ``DEFAULT_NUM_ENVS["ppo"]`` = 64 envs): rollouts of 16 steps (batch 1,024, 4
#: minibatches of 256, 4 epochs), the tanh MLP with orthogonal init of SB3 / CleanRL
#: (``activation="tanh"``; an mlp-backbone default only: ``TrainConfig.agent_config``
#: drops it for other backbones and pretrained encoders) and no value clipping (rewards
#: in percent give returns of several units, while a clipped value loss moves the value
#: only ``clip_coef`` per update). Chosen for wall-clock time to a test-period return of
#: buy-and-hold + 1.0 on the edge market (``benchmarks/bench_sb3.py --task edge``; tuned on
#: seeds 0-9, confirmed on 20-24): the old 32 envs x 16 steps, ReLU, clipped value loss
#: needed a median 4,096 steps on seeds 0-4 (seed 2: 16,384); these settings reach the
#: target at the first evaluation (2,048 steps) on 9 of seeds 0-9 (seed 2: 6,144) and on
#: 3 of the held-out seeds 20-24 (the other two: 4,096). 64 envs x 16 steps also halve the
#: gradient and vector steps per sample of 32 x 16: 2,048 steps took a median 0.16 s
#: against 0.27 s (2 shared cores, 1 thread, same process). Median SB3/ours time ratio
#: 2.9x before, now 7.7x on seeds 0-4 and 8.5x / 9.4x (two runs) on seeds 20-24. The
#: edge-learning tests' excess returns on seeds 0-2 went from +1.73 / +1.23 / +0.96 to
#: +1.86 / +1.48 / +0.86 (edge 0: -0.09 / -0.51 / -0.29, no invented edge).
STOCK_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 1e-3, "num_steps": 16,
            "activation": "tanh", "clip_vloss": False},
    "dqn": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 1e-3, "learning_starts": 2000,
            "train_frequency": 8, "batch_size": 128, "target_update_interval": 250,
            "exploration_fraction": 0.3, "weight_decay": 1.0},
    "reinforce": {"reward_scale": 100.0, "gamma": 0.9, "learning_rate": 3e-3},
}
#: Training envs per algorithm when ``env.num_envs`` is not given (REINFORCE updates once
#: per batch of one episode per env, so fewer envs mean more updates per step).
DEFAULT_NUM_ENVS = {"ppo": 64, "dqn": 32, "reinforce": 8, "sb3-ppo": 8, "sb3-dqn": 8, "sb3-a2c": 8}
#: ``StockTradingEnv`` keywords a run's ``[env]`` table may set (besides ``features``,
#: ``scaler``, ``num_envs`` and ``episode_length``).
ENV_KEYS = ("window_size", "action_type", "positions", "allow_short", "max_gross", "market",
            "commission", "sell_tax", "slippage_bps", "min_commission", "borrow_rate", "fill",
            "fractional", "reward", "initial_cash")


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
    ``None``: the whole training period), and any
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
    fill: str = "open"
    fractional: bool = False
    reward: str = "log_return"
    initial_cash: float = 10_000_000.0

    def env_kwargs(self) -> dict[str, Any]:
        """``StockTradingEnv`` keywords (JSON-able; ``features`` resolved by the caller)."""
        return {k: getattr(self, k) for k in ENV_KEYS}


@dataclass
class TrainConfig:
    """One training run. TOML layout (``--config``)::

        algo = "ppo"              # dqn | ppo | reinforce | sb3-ppo | sb3-dqn | sb3-a2c
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
        data["data"] = _sub(DataSpec, data.get("data"), "data")
        data["env"] = _sub(EnvSpec, data.get("env"), "env")
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
            from stockgym.agents.sb3 import sb3_config

            return sb3_config(self)
        cls = ALGOS[self.algo].Config
        for key in ("seed", "device", "num_envs"):
            if key in self.agent:
                raise ValueError(f"set {key} at the top level of the config (or [env] for "
                                 f"num_envs), not in [agent]")
        defaults = STOCK_DEFAULTS[self.algo]
        if self.agent.get("backbone", "mlp") != "mlp" or self.agent.get("pretrained"):
            # ``activation`` is the new mlp backbone's (CommonConfig refuses it elsewhere)
            defaults = {k: v for k, v in defaults.items() if k != "activation"}
        return cls.from_dict({**defaults, **self.agent, "seed": self.seed,
                              "device": self.device, "num_envs": self.num_envs})

    @property
    def num_envs(self) -> int:
        """``env.num_envs``, or the algorithm's default."""
        return self.env.num_envs or DEFAULT_NUM_ENVS.get(self.algo, 32)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field (before anything is loaded)."""
        if self.algo not in ALGO_NAMES:
            raise ValueError(f"algo must be one of {ALGO_NAMES}, got {self.algo!r}")
        _check_int("total_timesteps", self.total_timesteps, 1)
        _check_int("eval_freq", self.eval_freq, 0)
        _check_int("checkpoint_freq", self.checkpoint_freq, 0)
        _check_int("seed", self.seed, None)
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
            _check_int("env.num_envs", e.num_envs, 1)
        if e.episode_length is not None:
            _check_int("env.episode_length", e.episode_length, 1)
        self.agent_config()


def _no_unknown(name: str, data: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; known: {', '.join(sorted(known))}")


def _sub(cls: type, value: Any, name: str) -> Any:
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
    """Write a config dict (values: str, numbers, bools, lists, nested tables) as TOML;
    ``None`` values are left out (TOML has no null: absent means the default)."""
    lines: list[str] = []
    _toml_table(lines, None, data)
    return "\n".join(lines) + "\n"


def _toml_table(lines: list[str], name: str | None, table: dict[str, Any]) -> None:
    """Append ``table``'s plain keys (under ``[name]`` unless top level), then its
    sub-tables."""
    if name is not None:
        lines += ["", f"[{name}]"]
    subs = []
    for key, value in table.items():
        if isinstance(value, dict):
            subs.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in subs:
        _toml_table(lines, key if name is None else f"{name}.{key}", value)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} {value!r} to TOML")


# ------------------------------------------------------------------ data and envs
def load_data(spec: DataSpec) -> pd.DataFrame:
    """The prices a :class:`DataSpec` names (one symbol: a flat frame, several: the
    ``(symbol, field)`` column MultiIndex), as ``load_prices`` returns them."""
    from stockgym.data import load_prices

    extra: dict[str, Any] = dict(spec.options) if spec.source == "synthetic" else {}
    if spec.source in ("auto", "fdr"):
        extra["cache_dir"] = spec.cache_dir
    target = spec.symbols[0] if len(spec.symbols) == 1 else list(spec.symbols)
    return load_prices(target, spec.start, spec.end, source=spec.source, **extra)


def split_dates(prices: pd.DataFrame, spec: DataSpec) -> dict[str, dict]:
    from stockgym.data import split

    if spec.train_end is None:
        return split(prices).dates
    return split(prices, train=spec.train_end, valid=spec.valid_end).dates


def fit_scaler(prices_train: pd.DataFrame, features: list[str], kind: str):
    """A FeatureScaler fitted on the training prices' features (``None`` for ``"none"``)."""
    if kind == "none":
        return None
    from stockgym.data import FeatureScaler, build_features

    return FeatureScaler(kind).fit(build_features(prices_train, features))


def _until(prices: pd.DataFrame, last: str) -> pd.DataFrame:
    out = prices.loc[: pd.Timestamp(last)]
    out.attrs = dict(prices.attrs)
    return out


def data_record(prices: pd.DataFrame, spec: DataSpec) -> dict[str, Any]:
    from stockgym.forecasters.storage import data_hash

    return {"source": spec.source, "symbols": list(spec.symbols),
            "options": dict(spec.options), "start": spec.start, "end": spec.end,
            "first": str(prices.index[0].date()), "last": str(prices.index[-1].date()),
            "rows": len(prices), "sha256": data_hash(prices),
            "adjusted": prices.attrs.get("adjusted")}


def _check_forecaster(fc: Any, path: str, dates: dict[str, dict]) -> dict[str, Any]:
    """A pretrained forecaster may only have seen data before our test period."""
    used = fc.config.get("valid_end") or fc.scaler.fit_end
    if used is not None and pd.Timestamp(used) > pd.Timestamp(dates["valid"]["last"]):
        raise ValueError(
            f"pretrained forecaster {path} was trained / selected on data through {used}, "
            f"after this run's validation period ends ({dates['valid']['last']}): its "
            "encoder has seen the test period. Train the forecaster on an earlier split"
        )
    return {"dir": str(Path(path).resolve()), "model": fc.model_name, "window": fc.window,
            "features": list(fc.features), "trained_through": used}


# ------------------------------------------------------------------ evaluation
def evaluate_on(agent: Any, env: Any, period: tuple[str, str], benchmark: bool = False
                ) -> tuple[dict[str, float], Any]:
    """Backtest ``agent`` deterministically on ``period`` of ``env`` (a StockTradingEnv):
    ``({"return": log(V_end / V_0), "sharpe", "final_value"}, BacktestResult)``; with
    ``benchmark`` the result holds buy-and-hold over the same dates and costs."""
    from stockgym.backtest import run_policy

    res = run_policy(agent, env, period, benchmark=True if benchmark else None)
    return _summary(res), res


def buy_and_hold(env: Any, period: tuple[str, str]) -> dict[str, float]:
    """Buy-and-hold of ``env``'s symbols over ``period`` with its costs, fill rule and
    cash (the benchmark every backtest report shows), summarised like :func:`evaluate_on`."""
    from stockgym.backtest import hold_env, run_policy
    from stockgym.backtest.strategies import BuyAndHold

    return _summary(run_policy(BuyAndHold(), hold_env(env), period, benchmark=None))


def _summary(res: Any) -> dict[str, float]:
    from stockgym.backtest.metrics import sharpe

    v = res.record["value"]
    sr = float(sharpe(res.returns))
    # a policy that never holds anything has no Sharpe ratio (zero variance): report 0
    return {"return": float(np.log(v.iloc[-1] / v.iloc[0])),
            "sharpe": sr if math.isfinite(sr) else 0.0, "final_value": float(v.iloc[-1])}


def random_policy_return(env: Any, period: tuple[str, str], seed: int) -> float:
    """Log return of a policy drawing uniformly random actions from ``env``'s action
    space every day (seeded), through ``env`` with its costs."""
    from stockgym.backtest import run_policy

    space = env.action_space
    space.seed(seed)
    return _summary(run_policy(lambda obs: space.sample(), env, period, benchmark=None))["return"]


def holdout_returns(run_dir: str | Path, period: str = "test", n_random: int = 5,
                    prices: pd.DataFrame | None = None) -> dict[str, float]:
    """After-cost log returns over one part of a run's split (default the held-out test
    period) of the trained agent (deterministic), buy-and-hold and the mean of
    ``n_random`` random policies (seeds 0..n_random-1), all through the run's env."""
    record, agent = load_run(run_dir)
    if prices is None:
        prices = load_data(run_data_spec(record))
    env = run_env(run_dir, record, prices)
    part = record["splits"][period]
    dates = (part["first"], part["last"])
    out = {"agent": evaluate_on(agent, env, dates)[0]["return"],
           "buy_and_hold": buy_and_hold(env, dates)["return"]}
    if n_random:
        out["random"] = float(np.mean([random_policy_return(env, dates, k) for k in range(n_random)]))
    return out


# ------------------------------------------------------------------ train
@dataclass
class TrainResult:
    """What :func:`train` returns: the agent, the run dir, the config.json record and the
    summary (also in ``summary.json``)."""

    agent: Any
    run_dir: Path
    record: dict[str, Any]
    summary: dict[str, Any]


def _default_run_dir(config: TrainConfig) -> Path:
    from stockgym.forecasters.storage import default_run_dir

    return default_run_dir("agents", config.algo, "-".join(config.data.symbols)[:40])


def prepare(config: TrainConfig, prices: pd.DataFrame | None = None) -> dict[str, Any]:
    """Load and split the data, fit the scaler, build the envs and the agent config:
    everything :func:`train` needs, checked, before anything is written."""
    from stockgym.envs import StockTradingEnv, VectorStockTradingEnv

    config.validate()
    agent_cfg = config.agent_config()
    if prices is None:
        prices = load_data(config.data)
    dates = split_dates(prices, config.data)
    for part in ("train", "valid"):
        if dates[part]["rows"] == 0:
            raise ValueError(f"the {part} period is empty: {dates}")
    train_prices = _until(prices, dates["train"]["last"])
    env_kwargs = config.env.env_kwargs()
    forecaster = None
    if agent_cfg.pretrained:
        from stockgym.forecasters.forecaster import Forecaster

        fc = Forecaster.load(agent_cfg.pretrained, device="cpu")
        forecaster = _check_forecaster(fc, agent_cfg.pretrained, dates)
        features, scaler = list(fc.features), fc.scaler
        env_kwargs["window_size"] = fc.window
    else:
        from stockgym.data import DEFAULT_FEATURES

        features = list(config.env.features or DEFAULT_FEATURES)
        scaler = fit_scaler(train_prices, features, config.env.scaler)
    env_kwargs["features"] = features
    venv = VectorStockTradingEnv(train_prices, config.num_envs,
                                 device=_env_device(config.device),
                                 episode_length=config.env.episode_length, scaler=scaler,
                                 **env_kwargs)
    valid_env = StockTradingEnv(_until(prices, dates["valid"]["last"]), scaler=scaler, **env_kwargs)
    return {"prices": prices, "dates": dates, "env_kwargs": env_kwargs, "scaler": scaler,
            "venv": venv, "valid_env": valid_env, "forecaster": forecaster,
            "agent_config": agent_cfg}


def _env_device(device: str) -> str:
    from stockgym.core import resolve_device

    return str(resolve_device(device))


def train(config: TrainConfig, *, prices: pd.DataFrame | None = None) -> TrainResult:
    """Run ``config`` (see the module docstring); ``prices`` replaces loading
    ``config.data`` (its spec is still recorded). Returns a :class:`TrainResult`."""
    from stockgym.agents import ALGOS
    from stockgym.forecasters import storage

    if config.algo.startswith("sb3-"):  # stable-baselines3 in the same run-dir layout
        from stockgym.agents.sb3 import train_sb3

        return train_sb3(config, prices=prices)
    prep = prepare(config, prices)
    run_dir = Path(config.run_dir) if config.run_dir else _default_run_dir(config)
    storage.check_new_dir(run_dir)
    config = config.replace(run_dir=str(run_dir),
                            env=dataclasses.replace(config.env, num_envs=config.num_envs))
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        agent = ALGOS[config.algo](prep["venv"], prep["agent_config"])
        record = run_record(config, prep, agent)
        storage.write_json(run_dir / "config.json", record)
        storage.write_text(run_dir / "config.toml", to_toml(_toml_ready(config)))
        if prep["scaler"] is not None:
            prep["scaler"].save(run_dir / "scaler.json")
        state = _new_state(config, prep, resumes=0)
    except BaseException:
        _remove(run_dir, created)
        raise
    try:
        return _learn(config, prep, run_dir, agent, record, state, resume=False)
    except KeyboardInterrupt:  # Ctrl-C keeps the run (model, checkpoint): --resume goes on
        raise
    except BaseException:
        _remove(run_dir, created)
        raise


def resume(run_dir: str | Path, *, prices: pd.DataFrame | None = None,
           progress: bool | None = None) -> TrainResult:
    """Continue the ``stockgym train`` run in ``run_dir`` from its last checkpoint
    (``checkpoint.pt``): the model, optimizer, RNG states, step counters, schedules,
    validation history, the training envs' positions and (DQN, when
    ``agent.save_replay_buffer``) the replay buffer. A run killed before its first
    checkpoint starts again from step 0 in the same dir. TensorBoard continues in the
    same folder; events the killed process wrote after the checkpoint are purged
    (``purge_step``). The data must hash to what the run recorded.

    What is and is not bit-identical to an uninterrupted run: the step count, the
    schedules and the state at the checkpoint are exact, and on the CPU with the same
    thread count the continuation is bit-identical (DQN: with ``save_replay_buffer``);
    on a GPU or with other thread counts torch's kernels are not guaranteed
    deterministic, so later numbers can differ in the last bits, as they can between
    two uninterrupted runs.
    """
    from stockgym.agents.base import Agent, read_checkpoint

    run_dir = Path(run_dir)
    record = read_record(run_dir, need_model=False)
    if str(record["config"].get("algo", "")).startswith("sb3-"):  # see stockgym.agents.sb3
        raise ValueError(f"{run_dir} is a stable-baselines3 run ({record['config']['algo']}): "
                         "sb3-* runs cannot be resumed (their model so far is model/sb3.zip)")
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        from stockgym.forecasters import storage

        done = storage.read_json(summary_file, "run summary (summary.json)")
        if isinstance(done, dict) and not done.get("interrupted"):
            raise ValueError(f"{run_dir} finished training ({done.get('timesteps')} steps); "
                             "nothing to resume")
    config = TrainConfig.from_dict(record["config"])
    if progress is not None:
        config.progress = progress
    prep = prepare(config, prices)
    data = data_record(prep["prices"], config.data)
    if data["sha256"] != record["data"]["sha256"]:
        raise ValueError(
            f"the data of {run_dir} changed since the run started (SHA-256 "
            f"{record['data']['sha256'][:12]}... recorded, {data['sha256'][:12]}... now; "
            f"{record['data']['first']}..{record['data']['last']} recorded, "
            f"{data['first']}..{data['last']} now): cannot resume on other data")
    _after_existing_events(run_dir / "tensorboard")
    ckpt_file = run_dir / CHECKPOINT
    if not ckpt_file.is_file():  # killed before the first checkpoint: start over here
        from stockgym.agents import ALGOS

        agent = ALGOS[config.algo](prep["venv"], prep["agent_config"])
        state = _new_state(config, prep, resumes=1)
        return _learn(config, prep, run_dir, agent, record, state, resume=False, purge_step=0)
    ckpt = read_checkpoint(ckpt_file, fmt=RUN_CHECKPOINT)
    agent = Agent.from_checkpoint(ckpt["agent"], env=prep["venv"], device=config.device,
                                  path=str(ckpt_file))
    prep["venv"].load_state_dict(ckpt["env"])  # every env where the checkpoint left it
    if ckpt["last_obs"] is not None:
        agent._last_obs = ckpt["last_obs"].to(agent.device)
    agent._env_seeded = True
    state = dict(ckpt["trainer"])
    state["resumes"] = int(state.get("resumes", 0)) + 1
    return _learn(config, prep, run_dir, agent, record, state, resume=True,
                  purge_step=int(agent.num_timesteps) + 1)


def _new_state(config: TrainConfig, prep: dict[str, Any], resumes: int) -> dict[str, Any]:
    """The trainer state of a run starting at step 0 (what a checkpoint's ``trainer``
    holds): validation history, the buy-and-hold validation benchmark, seconds so far,
    resumes, the steps of the next evaluation and checkpoint."""
    valid = prep["dates"]["valid"]
    bench = buy_and_hold(prep["valid_env"], (valid["first"], valid["last"]))
    return {"history": [], "bench": bench, "seconds": 0.0, "resumes": resumes,
            "next_eval": config.eval_freq or None,
            "next_checkpoint": config.checkpoint_freq or None}


def _after_existing_events(tb_dir: Path) -> None:
    """Wait (at most a second) until the clock is past the newest TensorBoard event file's
    time stamp: TensorBoard reads a folder's event files in name order, and the name
    starts with whole seconds, so a resumed writer must not share the killed one's second
    (its purge would be read before the events it purges)."""
    stamps = []
    for f in tb_dir.glob("events.out.tfevents.*"):
        part = f.name.split(".")[3] if f.name.count(".") >= 3 else ""
        if part.isdigit():
            stamps.append(int(part))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


#: the training checkpoint a run dir keeps (rewritten every ``checkpoint_freq`` steps)
CHECKPOINT = "checkpoint.pt"
RUN_CHECKPOINT = "stockgym.run_checkpoint"


def write_checkpoint(run_dir: Path, agent: Any, state: dict[str, Any]) -> None:
    """Atomically write ``run_dir/checkpoint.pt``: ``{"format", "version", "agent"
    (the agent's checkpoint dict), "trainer" (validation history, next evaluation and
    checkpoint steps, seconds so far), "env" (the training envs' positions and RNG),
    "last_obs"}`` - plain values and tensors only (read with ``weights_only=True``)."""
    from stockgym.agents.base import VERSION, to_bytes
    from stockgym.forecasters import storage

    last = agent._last_obs
    ckpt = {"format": RUN_CHECKPOINT, "version": VERSION, "agent": agent.checkpoint(),
            "trainer": _json_ready(state), "env": agent.env.env.state_dict(),
            "last_obs": None if last is None else last.detach().cpu()}
    storage.write_bytes(run_dir / CHECKPOINT, to_bytes(ckpt))


def _learn(config: TrainConfig, prep: dict[str, Any], run_dir: Path, agent: Any,
           record: dict[str, Any], state: dict[str, Any], *, resume: bool,
           purge_step: int | None = None) -> TrainResult:
    """Train (or go on training) ``agent`` to ``config.total_timesteps`` with validation
    backtests and checkpoints, then write the model and ``summary.json``."""
    from stockgym.forecasters import storage

    valid_env, dates = prep["valid_env"], prep["dates"]
    valid_period = (dates["valid"]["first"], dates["valid"]["last"])
    bench, history = state["bench"], state["history"]
    agent.log_dir = run_dir / "tensorboard" if config.tensorboard else None
    agent.progress = config.progress

    def on_update(a: Any, step: int) -> None:
        nxt = state["next_eval"]
        if nxt is not None and step >= nxt:
            while state["next_eval"] <= step:
                state["next_eval"] += config.eval_freq
            ev = evaluate_on(a, valid_env, valid_period)[0]
            ev["excess_return"] = ev["return"] - bench["return"]
            history.append({"step": int(step), **ev})
            for key in ("return", "sharpe", "excess_return"):
                a.logger.scalar(f"eval/{key}", ev[key], step)
        nxt = state["next_checkpoint"]
        if nxt is not None and step >= nxt:
            while state["next_checkpoint"] <= step:
                state["next_checkpoint"] += config.checkpoint_freq
            a.logger.flush()  # TensorBoard has every event up to the checkpoint
            write_checkpoint(run_dir, a, {**state, "seconds": seconds_so_far()})

    t0 = time.perf_counter()
    before = float(state.get("seconds", 0.0))

    def seconds_so_far() -> float:
        return before + time.perf_counter() - t0

    interrupted = False
    try:
        agent.learn(config.total_timesteps, callback=on_update, resume=resume,
                    purge_step=purge_step)
    except KeyboardInterrupt:
        interrupted = True
    seconds = seconds_so_far()
    if history and history[-1]["step"] == agent.num_timesteps:  # just evaluated: reuse it
        final = {k: v for k, v in history[-1].items() if k != "step"}
    else:
        final = evaluate_on(agent, valid_env, valid_period)[0]
        final["excess_return"] = final["return"] - bench["return"]
    if config.tensorboard and not (history and history[-1]["step"] == agent.num_timesteps):
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as w:
            for key in ("return", "sharpe", "excess_return"):
                w.add_scalar(f"eval/{key}", final[key], agent.num_timesteps)
    agent.save(run_dir / "model")
    if interrupted:  # Ctrl-C: the checkpoint continues from here (stockgym train --resume)
        write_checkpoint(run_dir, agent, {**state, "seconds": seconds})
    last = agent.logger.last if agent.logger else {}
    summary = {
        "algo": config.algo, "timesteps": int(agent.num_timesteps),
        "seconds": round(seconds, 2),
        "sps": round(agent.num_timesteps / seconds, 1) if seconds > 0 else None,
        "interrupted": interrupted,
        "resumes": int(state.get("resumes", 0)),
        "train_recent_return": _finite(last.get("charts/episodic_return")),
        "valid": {"period": dates["valid"], "agent": final, "buy_and_hold": bench},
        "eval_history": history,
    }
    storage.write_json(run_dir / "summary.json", _json_ready(summary))
    if interrupted:
        raise KeyboardInterrupt
    return TrainResult(agent, run_dir, record, summary)


def _remove(run_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:  # it existed empty: empty it again
        for p in run_dir.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _toml_ready(config: TrainConfig) -> dict[str, Any]:
    d = config.to_dict()
    d.pop("progress", None)
    return d


def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding this package, or ``None``."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": out.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(config: TrainConfig, prep: dict[str, Any], agent: Any) -> dict[str, Any]:
    """The ``config.json`` of a run (see the module docstring)."""
    import gymnasium
    import sklearn
    import torch

    import stockgym

    return _json_ready({
        "format": "stockgym.agents.run", "version": 1,
        "config": config.to_dict(),
        "agent": agent.config.to_dict(),
        "splits": prep["dates"],
        "data": data_record(prep["prices"], config.data),
        "env": prep["venv"].template.config(),  # the training env (its period, costs...)
        "env_kwargs": prep["env_kwargs"],
        "scaler": "scaler.json" if prep["scaler"] is not None else None,
        "forecaster": prep["forecaster"],
        "device": str(agent.device),
        "versions": {"stockgym": stockgym.__version__, "torch": str(torch.__version__),
                     "gymnasium": gymnasium.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "scikit-learn": sklearn.__version__},
        "git": git_commit(),
        "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    })


# ------------------------------------------------------------------ reading runs back
def read_record(run_dir: str | Path, need_model: bool = True) -> dict[str, Any]:
    """``config.json`` of a ``stockgym train`` run dir (clear errors otherwise)."""
    from stockgym.forecasters import storage

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist (or is not a directory)")
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a `stockgym train` run dir (no config.json)")
    record = storage.read_json(run_dir / "config.json", "run config (config.json)")
    if not isinstance(record, dict) or record.get("format") != "stockgym.agents.run":
        raise ValueError(f"{run_dir} is not a `stockgym train` run dir (its config.json is not one)")
    if need_model and str(record.get("config", {}).get("algo", "")).startswith("sb3-"):
        if not (run_dir / "model" / "sb3.zip").is_file():
            raise FileNotFoundError(f"{run_dir} has no trained model (model/sb3.zip is missing)")
    elif need_model and not (run_dir / "model" / "agent.pt").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained model (model/agent.pt is missing)")
    return record


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """``(config.json record, agent)`` of a run dir."""
    from stockgym.agents.base import load_agent

    record = read_record(run_dir)
    if str(record["config"].get("algo", "")).startswith("sb3-"):  # SB3's loader: trusted runs only
        from stockgym.agents.sb3 import load_sb3

        return record, load_sb3(Path(run_dir) / "model", device=device)
    return record, load_agent(Path(run_dir) / "model", device=device)


def run_scaler(run_dir: str | Path, record: dict[str, Any]) -> Any:
    """The run's fitted feature scaler (or ``None``)."""
    if record.get("scaler") is None:
        return None
    from stockgym.data import FeatureScaler

    return FeatureScaler.load(Path(run_dir) / record["scaler"])


def run_env(run_dir: str | Path, record: dict[str, Any], prices: pd.DataFrame) -> Any:
    """A ``StockTradingEnv`` over ``prices`` built exactly as the run's envs were (same
    features, window, costs, fitted scaler)."""
    from stockgym.envs import StockTradingEnv

    kwargs = dict(record["env_kwargs"])
    return StockTradingEnv(prices, scaler=run_scaler(run_dir, record), **kwargs)


def run_data_spec(record: dict[str, Any], **changes: Any) -> DataSpec:
    """The run's :class:`DataSpec`, with ``changes`` (e.g. ``end=None`` for live data)."""
    spec = _sub(DataSpec, record["config"]["data"], "data")
    return dataclasses.replace(spec, **changes)
