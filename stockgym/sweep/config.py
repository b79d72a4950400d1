"""The sweep file (``stockgym sweep CONFIG.toml``): a base training config, a search
space, seeds and symbols, and how to search. Parsing and every check happen here,
before Ray is imported or any trial starts.

Layout::

    [sweep]
    metric = "valid.agent.sharpe"   # a number in the run's summary.json (see METRICS)
    mode = "max"                    # max | min
    search = "grid"                 # grid | random | optuna
    n_trials = 8                    # random / optuna: configurations to draw
    seed = 0                        # seed of the random / Optuna draws
    seeds = [0, 1, 2]               # training seeds: every configuration runs with each
    symbols = ["AAPL", "MSFT"]      # one configuration per symbol (or per list of symbols)
    base = "ppo.toml"               # a `stockgym train` config file (relative to this file)
    out = "runs/sweeps/ppo"         # the sweep dir (--out wins)
    num_cpus = 2                    # local Ray's CPUs (default: all of this machine's)
    max_concurrent = 2              # trials at once (default: as many as resources allow)
    test = true                     # backtest the best configuration on the test period

    [sweep.resources]               # per trial (fractions allowed: gpu = 0.25)
    cpu = 1
    gpu = 0

    [train]                         # the base training config (wins over `base`)
    algo = "ppo"
    total_timesteps = 100000
    [train.data]
    source = "sample"

    [space]                         # dotted TrainConfig keys
    "agent.learning_rate" = [3e-4, 1e-3]             # grid: every value
    "agent.backbone" = {choice = ["mlp", "lstm"]}     # random / optuna: one of them
    "agent.gamma" = {uniform = [0.8, 0.99]}           # lo <= x <= hi
    "agent.ent_coef" = {loguniform = [1e-4, 1e-1]}    # log-uniform, 0 < lo < hi
    "env.window_size" = {randint = [10, 60]}          # integer, both ends included

``[space]`` keys may also be written as TOML tables (``[space.agent]`` then
``learning_rate = [...]``). A configuration is one point of the space (symbols
included); a trial is one configuration with one seed (Optuna: with all seeds).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockgym.sweep.space import (
    Entry,
    SweepError,
    is_number,
    no_duplicates,
    parse_space,
)
from stockgym.sweep.trees import _absolute_entry, _absolute_paths, _type_error, build_tree

#: Numbers of a run's ``summary.json`` a sweep may select on (dotted paths). All come
#: from the training or validation periods; the test period is never among them.
METRICS = (
    "valid.agent.sharpe",
    "valid.agent.return",
    "valid.agent.excess_return",
    "valid.agent.final_value",
    "train_recent_return",
)
SEARCHES = ("grid", "random", "optuna")
SWEEP_KEYS = (
    "metric",
    "mode",
    "search",
    "n_trials",
    "seed",
    "seeds",
    "symbols",
    "base",
    "out",
    "num_cpus",
    "num_gpus",
    "max_concurrent",
    "test",
    "resources",
)
#: Longest Ray temp dir: Ray puts unix sockets at
#: ``TEMP/session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store`` and a unix
#: socket path may have at most 107 bytes.
MAX_RAY_TEMP_LEN = 43


# ------------------------------------------------------------------ the sweep
@dataclass
class SweepConfig:
    """A parsed sweep file (see the module docstring); :func:`load_sweep` makes one."""

    train: dict[str, Any]
    space: list[Entry] = field(default_factory=list)
    metric: str = "valid.agent.sharpe"
    mode: str = "max"
    search: str = "grid"
    n_trials: int | None = None
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str | None = None
    num_cpus: int | None = None
    num_gpus: float | None = None
    max_concurrent: int | None = None
    test: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    source: str | None = None  # the file it came from

    # ---------------------------------------------------------------- shape
    @property
    def grid_entries(self) -> list[Entry]:
        return [e for e in self.space if e.is_grid]

    @property
    def random_entries(self) -> list[Entry]:
        return [e for e in self.space if not e.is_grid]

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.space]

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration of a grid / random search, in order:
        ``[{"id": "c000", "params": {key: value}}]`` (empty for Optuna, whose
        configurations are chosen while it runs). Random draws come from ``seed``."""
        if self.search == "optuna":
            return []
        import numpy as np

        grid = self.grid_entries
        combos = [
            dict(zip([e.key for e in grid], vals, strict=True))
            for vals in itertools.product(*[e.values for e in grid])
        ]
        if self.search == "random":
            rng = np.random.default_rng(self.seed)
            draws = [
                {e.key: e.sample(rng) for e in self.random_entries}
                for _ in range(self.n_trials or 0)
            ]
        else:
            draws = [{}]
        params = [{**d, **c} for d in draws for c in combos]
        width = max(3, len(str(len(params) - 1)))
        return [
            {"id": f"c{i:0{width}d}", "params": {k: p[k] for k in self.keys if k in p}}
            for i, p in enumerate(params)
        ]

    def trials(self) -> list[dict[str, Any]]:
        """Grid / random: one trial per configuration and seed,
        ``[{"name": "c000-s0", "config": "c000", "params": {...}, "seed": 0}]``."""
        return [
            {"name": trial_name(c["id"], s), "config": c["id"], "params": c["params"], "seed": s}
            for c in self.configurations()
            for s in self.seeds
        ]

    def base_tree(self) -> dict[str, Any]:
        """The base training config as trials get it: no progress bar, paths absolute,
        ``device = "cpu"`` when trials reserve no GPU and the device was ``auto``."""
        tree = copy.deepcopy(self.train)
        tree["progress"] = False
        tree.pop("run_dir", None)
        if self.gpus_per_trial == 0 and tree.get("device", "auto") == "auto":
            tree["device"] = "cpu"
        _absolute_paths(tree)
        return tree

    def tree(self, params: dict[str, Any], seed: int, run_dir: str | None = None) -> dict[str, Any]:
        """The training config dict of one run."""
        return build_tree(self.base_tree(), params, seed, run_dir)

    # ---------------------------------------------------------------- checks
    def check(self, preflight: bool = True) -> None:
        """Check every entry and every configuration (``SweepError`` naming it) before
        anything runs: each grid / choice value and both ends of each range (with the
        entries listed before it at their first value), then every concrete trial config
        of a grid / random search. With
        ``preflight``, also do for the base config and for each of those values what
        ``stockgym train`` does before training (load the data, build the envs and the
        agent; the other entries at their first value), so a bad window, symbol or
        action space fails here, not in every trial."""
        first = {e.key: e.values[0] for e in self.space}
        seed = self.seeds[0]
        # entries in order, each value with the earlier entries at their first value,
        # so an error is blamed on the entry that causes it ([sweep] symbols come first)
        prefix = {"data.symbols": first["data.symbols"]} if "data.symbols" in first else {}
        _check_tree(self.tree(prefix, seed), "[train] (the base config)")
        corners = [("[train] (the base config)", self.tree(first, seed))]
        for e in self.space:
            for v in e.corners():
                msg = _type_error(e.key, v)
                if msg:
                    raise SweepError(f"[space] {e.key} = {v!r}: {msg}")
                where = f"[space] {e.key} = {v!r}"
                _check_tree(self.tree({**prefix, e.key: v}, seed), where)
                corners.append((where, self.tree({**first, e.key: v}, seed)))
            prefix[e.key] = e.values[0]
        for t in self.trials():
            _check_tree(
                self.tree(t["params"], t["seed"]),
                f"configuration {t['config']} ({_fmt_params(t['params'])})",
            )
        if preflight:
            _preflight(corners)

    # ---------------------------------------------------------------- records
    def settings(self) -> dict[str, Any]:
        """What defines the sweep's trials (its fingerprint is taken over this)."""
        return {
            "metric": self.metric,
            "mode": self.mode,
            "search": self.search,
            "n_trials": self.n_trials,
            "seed": self.seed,
            "seeds": list(self.seeds),
            "train": self.base_tree(),
            "space": [e.to_dict() for e in self.space],
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def plan(self, sweep_dir: str | Path) -> dict[str, Any]:
        """Everything a trial needs (JSON-able; sent to the Ray workers)."""
        sweep_dir = Path(sweep_dir).resolve()
        return {
            "format": "stockgym.sweep",
            "version": 1,
            **self.settings(),
            "fingerprint": self.fingerprint(),
            "configs": self.configurations(),
            "trials": self.trials(),
            "resources": {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial},
            "sweep_dir": str(sweep_dir),
            "runs_dir": str(sweep_dir / "runs"),
        }

    def describe(self) -> str:
        """One line: how many trials of what."""
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        if self.search == "optuna":
            return (
                f"Optuna, {self.n_trials} configurations x {seeds} (each Optuna trial "
                f"trains every seed), metric {self.metric} ({self.mode})"
            )
        n = len(self.configurations())
        return (
            f"{self.search}, {n * len(self.seeds)} trials ({n} configuration"
            f"{'s' if n != 1 else ''} x {seeds}), metric {self.metric} ({self.mode})"
        )


def trial_name(config_id: str, seed: int) -> str:
    """The run dir name of one configuration and seed."""
    return f"{config_id}-s{seed}"


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the base config"


def _preflight(trees: list[tuple[str, dict[str, Any]]]) -> None:
    """``prepare`` (data, split, scaler, envs) and the agent's constructor for each
    config, on the CPU; data and envs are shared between configs that agree on them."""
    from stockgym.experiment import TrainConfig
    from stockgym.experiment.records import load_data
    from stockgym.experiment.train import prepare

    loaded: dict[str, Any] = {}
    prepared: dict[str, Any] = {}
    for where, tree in trees:
        try:
            config = TrainConfig.from_dict({**tree, "device": "cpu"})
            config.validate()
            data_key = json.dumps(dataclasses.asdict(config.data), sort_keys=True, default=str)
            if data_key not in loaded:
                loaded[data_key] = load_data(config.data)
            env_key = json.dumps(
                [
                    data_key,
                    dataclasses.asdict(config.env),
                    config.algo,
                    config.agent.get("pretrained"),
                ],
                sort_keys=True,
                default=str,
            )
            if env_key not in prepared:
                prepared[env_key] = prepare(config, loaded[data_key])
            _build_agent(config, prepared[env_key])
        except (TypeError, ValueError, KeyError, FileNotFoundError) as exc:
            raise SweepError(f"{where}: {exc}") from exc


def _build_agent(config: Any, prep: dict[str, Any]) -> None:
    """Construct the run's agent once (catches e.g. DQN on a continuous action space)."""
    from stockgym.agents import ALGOS

    if config.algo in ALGOS:
        ALGOS[config.algo](prep["venv"], config.agent_config())


def _check_tree(tree: dict[str, Any], where: str) -> None:
    from stockgym.experiment import TrainConfig

    try:
        config = TrainConfig.from_dict(tree)
        config.validate()
    except (TypeError, ValueError, KeyError) as exc:
        raise SweepError(f"{where}: {exc}") from exc


# ------------------------------------------------------------------ loading
def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def load_sweep(path: str | Path) -> SweepConfig:
    """Parse a sweep TOML file (``SweepError`` / ``FileNotFoundError`` naming the problem).
    Only the file's own structure is checked here; :meth:`SweepConfig.check` checks
    the trial configs."""
    from stockgym.experiment.config import read_toml

    path = Path(path)
    tree = read_toml(path)
    return sweep_from_dict(tree, base_dir=path.parent, source=str(path))


def sweep_from_dict(
    tree: dict[str, Any], base_dir: str | Path = ".", source: str | None = None
) -> SweepConfig:
    """A :class:`SweepConfig` from the parsed TOML dict (``base`` is read relative to
    ``base_dir``)."""
    from stockgym.experiment.config import read_toml

    unknown = sorted(set(tree) - {"sweep", "train", "space"})
    if unknown:
        raise SweepError(
            f"unknown top-level table(s) {unknown}; a sweep file has [sweep], [train] and [space]"
        )
    s = tree.get("sweep", {})
    if not isinstance(s, dict):
        raise SweepError(f"[sweep] must be a table, got {s!r}")
    bad = sorted(set(s) - set(SWEEP_KEYS))
    if bad:
        raise SweepError(f"unknown [sweep] key(s) {bad}; known: {', '.join(SWEEP_KEYS)}")
    train: dict[str, Any] = {}
    if "base" in s:
        if not isinstance(s["base"], str):
            raise SweepError(f"[sweep] base must be a file name, got {s['base']!r}")
        base_file = Path(base_dir) / s["base"]
        try:
            train = read_toml(base_file)
        except FileNotFoundError as exc:
            raise SweepError(f"[sweep] base: {exc}") from exc
    own = tree.get("train", {})
    if not isinstance(own, dict):
        raise SweepError(f"[train] must be a table, got {own!r}")
    train = _deep_merge(train, own)
    if not train:
        raise SweepError(
            "no training config: give a [train] table or [sweep] base = FILE "
            "(a `stockgym train --config` file)"
        )
    space = parse_space(tree.get("space"))

    metric = s.get("metric", "valid.agent.sharpe")
    if metric not in METRICS:
        raise SweepError(
            f"[sweep] metric must be one of {', '.join(METRICS)}, got {metric!r} "
            "(the test period is never used for selection)"
        )
    mode = s.get("mode", "max")
    if mode not in ("max", "min"):
        raise SweepError(f"[sweep] mode must be max or min, got {mode!r}")
    search = s.get("search", "grid")
    if search not in SEARCHES:
        raise SweepError(f"[sweep] search must be one of {', '.join(SEARCHES)}, got {search!r}")
    n_trials = s.get("n_trials")
    if search == "grid":
        if n_trials is not None:
            raise SweepError(
                '[sweep] n_trials applies to search = "random" or "optuna"; '
                "a grid runs every combination"
            )
        for e in space:
            if not e.is_grid:
                raise SweepError(
                    f"[space] {e.describe()} draws values at random: set "
                    '[sweep] search = "random" or "optuna" (a grid takes lists)'
                )
    else:
        n_trials = 10 if n_trials is None else n_trials
        if not (isinstance(n_trials, int) and not isinstance(n_trials, bool) and n_trials >= 1):
            raise SweepError(f"[sweep] n_trials must be an integer >= 1, got {n_trials!r}")
    if search == "optuna":
        for e in space:
            if e.is_grid:
                raise SweepError(
                    f"[space] {e.describe()}: Optuna cannot grid over a list; "
                    f"write {e.key} = {{choice = {list(e.values)!r}}}"
                )
            if e.kind == "choice" and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in e.values
            ):
                raise SweepError(
                    f"[space] {e.describe()}: Optuna chooses among numbers, "
                    "strings and booleans only"
                )
        if not space:
            raise SweepError('search = "optuna" needs at least one [space] entry')
    seed = s.get("seed", 0)
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise SweepError(f"[sweep] seed must be an integer, got {seed!r}")
    seeds = s.get("seeds", [train.get("seed", 0)])
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    ):
        raise SweepError(f"[sweep] seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"[sweep] seeds lists a seed more than once: {seeds!r}")

    if "symbols" in s:
        symbols = s["symbols"]
        if not isinstance(symbols, list) or not symbols:
            raise SweepError(f"[sweep] symbols must be a non-empty list, got {symbols!r}")
        sets = []
        for item in symbols:
            group = [item] if isinstance(item, str) else item
            if not (
                isinstance(group, list) and group and all(isinstance(x, str) and x for x in group)
            ):
                raise SweepError(
                    f"[sweep] symbols: each item is a symbol or a list of symbols, got {item!r}"
                )
            sets.append(group)
        if any(e.key == "data.symbols" for e in space):
            raise SweepError(
                "give the symbols in [sweep] symbols or [space] data.symbols, not both"
            )
        if search == "optuna":
            raise SweepError(
                "[sweep] symbols is a grid, which Optuna cannot search: run one "
                'sweep per symbol, or use search = "grid" / "random"'
            )
        no_duplicates("[sweep] symbols", sets)
        space = [Entry("data.symbols", "grid", tuple(sets)), *space]

    space = [_absolute_entry(e, train) for e in space]
    res = s.get("resources", {})
    if not isinstance(res, dict):
        raise SweepError(f"[sweep.resources] must be a table (cpu, gpu), got {res!r}")
    bad = sorted(set(res) - {"cpu", "gpu"})
    if bad:
        raise SweepError(f"unknown [sweep.resources] key(s) {bad}; known: cpu, gpu")
    cpu, gpu = res.get("cpu", 1), res.get("gpu", 0)
    if not (is_number(cpu) and cpu > 0):
        raise SweepError(f"[sweep.resources] cpu must be a number > 0, got {cpu!r}")
    if not (is_number(gpu) and gpu >= 0):
        raise SweepError(f"[sweep.resources] gpu must be a number >= 0, got {gpu!r}")
    if gpu > 1 and gpu != int(gpu):
        raise SweepError(f"[sweep.resources] gpu above 1 must be whole, got {gpu!r}")

    num_cpus = s.get("num_cpus")
    if num_cpus is not None and not (
        isinstance(num_cpus, int) and not isinstance(num_cpus, bool) and num_cpus >= 1
    ):
        raise SweepError(f"[sweep] num_cpus must be an integer >= 1, got {num_cpus!r}")
    num_gpus = s.get("num_gpus")
    if num_gpus is not None and not (is_number(num_gpus) and num_gpus >= 0):
        raise SweepError(f"[sweep] num_gpus must be a number >= 0, got {num_gpus!r}")
    max_conc = s.get("max_concurrent")
    if max_conc is not None and not (
        isinstance(max_conc, int) and not isinstance(max_conc, bool) and max_conc >= 1
    ):
        raise SweepError(f"[sweep] max_concurrent must be an integer >= 1, got {max_conc!r}")
    test = s.get("test", True)
    if not isinstance(test, bool):
        raise SweepError(f"[sweep] test must be true or false, got {test!r}")
    out = s.get("out")
    if out is not None and not isinstance(out, str):
        raise SweepError(f"[sweep] out must be a path, got {out!r}")
    return SweepConfig(
        train=train,
        space=space,
        metric=metric,
        mode=mode,
        search=search,
        n_trials=n_trials if search != "grid" else None,
        seed=seed,
        seeds=list(seeds),
        out=out,
        num_cpus=num_cpus,
        num_gpus=float(num_gpus) if num_gpus is not None else None,
        max_concurrent=max_conc,
        test=test,
        cpus_per_trial=float(cpu),
        gpus_per_trial=float(gpu),
        source=source,
    )
