"""``evaluate(config)``: does the agent beat buy-and-hold out of sample, by more than luck?

Rolling origin (``docs/evaluate.md``): the last ``windows x window_days`` rows of every
symbol are cut into consecutive test windows. For each symbol x window x seed the agent
is trained only on the rows before the window (its validation carved from their end),
then backtested once on the window with the run's costs; with ``ablate_forecasts`` the
same agent is trained again without forecast features. Baselines run on the same
windows with the same costs. Runs are independent jobs: local processes (``workers``),
each writing ``runs/<symbol>/w<k>/<policy>-s<seed>/result.json`` atomically, so a
resumed evaluation skips what finished. :mod:`stockgym.experiment.evaluate_report`
turns the results into ``summary.json``, ``results.csv``, ``report.md`` and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym import core
from stockgym.backtest import make_strategy, run_policy
from stockgym.backtest.report import trades_frame
from stockgym.core import check_int, check_number
from stockgym.experiment.config import TrainConfig
from stockgym.experiment.forecasts import ForecastSpec, forecast_features
from stockgym.experiment.records import json_ready, load_data, run_env
from stockgym.experiment.stats import entropy_bits

BASELINES = ("buy_and_hold", "sma_cross", "forecast_sign", "random")
EVALUATE_KEYS = ("windows", "window_days", "seeds", "symbols", "baselines", "ablate_forecasts",
                 "valid_fraction", "sweep_trials", "n_boot")  # fmt: skip


@dataclass
class EvaluateConfig:
    """``[evaluate]`` and ``[train]`` of an evaluation file.

    ``windows`` consecutive test windows of ``window_days`` rows at the end of the data;
    ``seeds`` of every agent; ``symbols`` (default: ``train.data.symbols``), each
    evaluated on its own; ``baselines`` from :data:`BASELINES`; ``ablate_forecasts``:
    also train the agent without ``[train.env.forecasts]``; ``valid_fraction``: the
    share of the rows before a window used as validation; ``sweep_trials``: how many
    configurations were tried before this one (the deflated Sharpe ratio counts
    ``seeds x sweep_trials`` trials); ``n_boot``: bootstrap replicates.
    """

    windows: int = 5
    window_days: int = 252
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    symbols: list[str] | None = None
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    ablate_forecasts: bool = True
    valid_fraction: float = 0.2
    sweep_trials: int = 1
    n_boot: int = 2000
    train: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> EvaluateConfig:
        """From a TOML tree ``{"evaluate": {...}, "train": {...}}`` (unknown keys refused)."""
        unknown = sorted(set(tree) - {"evaluate", "train"})
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; an evaluation file has [evaluate] "
                             "and [train]")  # fmt: skip
        ev = dict(tree.get("evaluate") or {})
        bad = sorted(set(ev) - set(EVALUATE_KEYS))
        if bad:
            raise ValueError(f"unknown [evaluate] key(s) {bad}; known: {EVALUATE_KEYS}")
        return cls(**ev, train=dict(tree.get("train") or {}))

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.train)

    def validate(self) -> TrainConfig:
        """``ValueError`` naming the first bad value; returns the checked train config."""
        check_int("evaluate.windows", self.windows, 1)
        check_int("evaluate.window_days", self.window_days, 2)
        check_int("evaluate.sweep_trials", self.sweep_trials, 1)
        check_int("evaluate.n_boot", self.n_boot, 100)
        check_number("evaluate.valid_fraction", self.valid_fraction, 0.0, 0.9, lo_open=True)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"evaluate.seeds must list distinct seeds, got {self.seeds!r}")
        for s in self.seeds:
            check_int("evaluate.seeds", s)
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {BASELINES}")
        tc = self.train_config()
        if tc.data.train_end or tc.data.valid_end:
            raise ValueError("[train.data] train_end / valid_end are set per window by evaluate")
        tc.validate()
        if self.symbols is not None and not self.symbols:
            raise ValueError("evaluate.symbols is empty")
        if "forecast_sign" in self.baselines and tc.env.forecasts is None:
            raise ValueError("baseline forecast_sign needs [train.env.forecasts]")
        return tc

    def symbol_list(self, tc: TrainConfig) -> list[str]:
        return list(self.symbols or tc.data.symbols)

    def n_trials(self) -> int:
        return len(self.seeds) * self.sweep_trials


@dataclass(frozen=True)
class Window:
    """Test window ``k`` of a symbol: decisions from the close of ``start`` (the last
    row before the window) to ``last``; everything before ``first`` trains."""

    symbol: str
    k: int
    start: str
    first: str
    last: str
    n_before: int

    def dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def windows_of(prices: pd.DataFrame, symbol: str, config: EvaluateConfig,
               min_before: int) -> list[Window]:  # fmt: skip
    """The test windows of ``prices`` (``ValueError`` naming what does not fit)."""
    n, w, d = len(prices), config.windows, config.window_days
    first_row = n - w * d
    if first_row < min_before:
        raise ValueError(
            f"{symbol}: {w} windows x {config.window_days} days need {w * d} rows plus at "
            f"least {min_before} before the first window; the data has {n} rows "
            f"({prices.index[0].date()}..{prices.index[-1].date()})"
        )
    idx = prices.index
    return [
        Window(symbol, k, str(idx[a - 1].date()), str(idx[a].date()), str(idx[a + d - 1].date()), a)
        for k, a in enumerate(range(first_row, n, d))
    ]


# ------------------------------------------------------------------ jobs
def job_dir(out: Path, window: Window, policy: str, seed: int | None) -> Path:
    tag = policy if seed is None else f"{policy}-s{seed}"
    return out / "runs" / window.symbol / f"w{window.k}" / tag


def _symbol_data(tc: TrainConfig, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    spec = dataclasses.replace(tc.data, symbols=[symbol])
    prices = load_data(spec)
    raw = None
    if tc.env.forecasts is not None:
        raw = forecast_features(prices, tc.env.forecasts, cache_dir=tc.data.cache_dir)
    return prices, raw


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (agents) and backtest one policy on one window; write and return its result.
    A top-level function of plain arguments, so worker processes can run it."""
    import torch

    torch.set_num_threads(int(job.get("threads") or 1))
    tc = TrainConfig.from_dict(job["train"])
    window = Window(**job["window"])
    out = Path(job["dir"])
    prices, raw = _symbol_data(tc, window.symbol)
    upto = prices.loc[: pd.Timestamp(window.last)]
    period = (pd.Timestamp(window.start), pd.Timestamp(window.last))
    policy, seed = job["policy"], job["seed"]
    actions: list[Any] = []
    if policy in ("agent", "agent_no_forecasts"):
        from stockgym.experiment.train import train

        before = prices.index[: window.n_before]
        cut = before[max(1, int(len(before) * (1 - job["valid_fraction"]))) - 1]
        data = dataclasses.replace(tc.data, symbols=[window.symbol],
                                   train_end=str(cut.date()), valid_end=window.start)  # fmt: skip
        env = dataclasses.replace(tc.env)
        if policy == "agent_no_forecasts":
            env.forecasts, raw = None, None
        cfg = tc.replace(data=data, env=env, seed=seed, run_dir=str(out / "run"),
                         progress=False, tensorboard=False, eval_freq=0, checkpoint_freq=0)  # fmt: skip
        res = train(cfg, prices=upto, forecasts=raw)
        test_env = run_env(res.run_dir, res.record, upto, forecasts=raw)
        agent = res.agent

        def act(obs: np.ndarray) -> Any:
            a = agent.predict(obs, deterministic=True)[0]
            actions.append(np.asarray(a, dtype=np.float64).reshape(-1))
            return a

        bt = run_policy(act, test_env, period, benchmark=True)
    else:
        from stockgym.envs import StockTradingEnv

        params: dict[str, Any] = {"seed": seed} if policy == "random" else {}
        extra = None
        if policy == "forecast_sign":
            spec = ForecastSpec.from_any(tc.env.forecasts)
            params["column"] = spec.columns()[0] if spec.pretrained is None else raw.columns[0]
            extra = raw
        kwargs = {**tc.env.env_kwargs(), "action_type": "continuous", "positions": None}
        env = StockTradingEnv(upto, extra_features=extra, **kwargs)
        bt = run_policy(make_strategy(policy, **params), env, period, benchmark=True)
    core.write_text(out / "trades.csv", trades_frame(bt).to_csv(index=False))  # (report.html)
    result = _result(job, window, bt, actions)
    core.write_json(out / "result.json", result)
    return result


def _result(job: dict[str, Any], window: Window, bt: Any, actions: list[Any]) -> dict[str, Any]:
    r = bt.returns.to_numpy(np.float64)
    b = bt.benchmark.returns.to_numpy(np.float64)
    m = bt.metrics()
    weights = bt.record[[c for c in bt.record.columns if c.startswith("weight_")]].to_numpy()
    held = weights[:-1].sum(axis=1) if weights.size else np.zeros(len(r))
    corr = np.corrcoef(r, b)[0, 1] if np.std(r) > 0 and np.std(b) > 0 else math.nan
    return json_ready({
        "symbol": window.symbol, "window": window.k, "seed": job["seed"],
        "policy": job["policy"], "first": window.first, "last": window.last,
        "days": len(r), "total_log_return": float(np.log1p(r).sum()),
        "bench_log_return": float(np.log1p(b).sum()),
        "trades": int(m.get("trades") or 0), "turnover": m.get("turnover"),
        "share_long": float(np.mean(held > 1e-9)) if len(held) else math.nan,
        "action_entropy": entropy_bits(np.concatenate(actions)) if actions else None,
        "corr_with_buy_and_hold": corr, "returns": r.tolist(), "bench_returns": b.tolist(),
        "terminated": bool(bt.terminated),
    })  # fmt: skip


# ------------------------------------------------------------------ the evaluation
def plan(config: EvaluateConfig, out: Path) -> tuple[list[Window], list[dict[str, Any]]]:
    """Every window and job, checked before anything trains (the forecasts of each symbol
    are computed here once, so jobs read them from the cache)."""
    tc = config.validate()
    min_before = max(60, 3 * tc.env.window_size + 30)
    windows: list[Window] = []
    for symbol in config.symbol_list(tc):
        prices, raw = _symbol_data(tc, symbol)
        ws = windows_of(prices, symbol, config, min_before)
        if raw is not None:
            train_last = prices.index[int(ws[0].n_before * (1 - config.valid_fraction)) - 1]
            if raw.empty or raw.index[0] > train_last:
                raise ValueError(
                    f"{symbol}: forecasts.min_train ({tc.env.forecasts['min_train']}) leaves no "
                    f"forecast in the training rows before the first window (through "
                    f"{train_last.date()}); lower it or use fewer windows"
                )
        if windows and [(w.first, w.last) for w in ws] != [
            (w.first, w.last) for w in windows[: len(ws)]
        ]:
            other = windows[0]
            raise ValueError(
                f"{symbol} and {other.symbol} trade on different calendars: {symbol}'s first "
                f"window is {ws[0].first}..{ws[0].last}, {other.symbol}'s {other.first}.."
                f"{other.last}; evaluate them separately (or on aligned data)"
            )
        windows += ws
    base = {"train": tc.to_dict(), "valid_fraction": config.valid_fraction, "threads": 1}
    policies = ["agent"]
    if config.ablate_forecasts and tc.env.forecasts is not None:
        policies.append("agent_no_forecasts")
    jobs = []
    for w in windows:
        for seed in config.seeds:
            for p in policies + (["random"] if "random" in config.baselines else []):
                jobs.append({**base, "window": w.dict(), "policy": p, "seed": seed,
                             "dir": str(job_dir(out, w, p, seed))})  # fmt: skip
        for p in config.baselines:
            if p != "random":
                jobs.append({**base, "window": w.dict(), "policy": p, "seed": None,
                             "dir": str(job_dir(out, w, p, None))})  # fmt: skip
    return windows, jobs


def _done(job: dict[str, Any]) -> dict[str, Any] | None:
    path = Path(job["dir"]) / "result.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return None


def evaluate(
    config: EvaluateConfig | dict[str, Any],
    out: str | Path,
    *,
    workers: int = 1,
    threads: int = 1,
    resume: bool = False,
    progress: bool = False,
    runner: Callable[[Callable, list[dict[str, Any]]], Iterable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Run the evaluation into ``out`` (module docstring) and return ``summary.json``'s
    content. ``workers`` processes run the jobs, each with ``threads`` torch threads;
    ``resume`` keeps finished runs (without it ``out`` must be new or empty).
    ``runner(run_job, jobs)`` replaces the local processes: it yields each job's result
    as it finishes (``stockgym evaluate --address`` passes Ray's,
    :func:`stockgym.sweep.runner.ray_map`)."""
    from stockgym.experiment.evaluate_report import write_report
    from stockgym.forecasters.storage import check_new_dir

    if isinstance(config, dict):
        config = EvaluateConfig.from_dict(config)
    out = Path(out)
    if not resume:
        check_new_dir(out)
    check_int("workers", workers, 1)
    check_int("threads", threads, 1)
    windows, jobs = plan(config, out)
    for job in jobs:
        job["threads"] = threads
    out.mkdir(parents=True, exist_ok=True)
    core.write_json(out / "evaluate.json", json_ready(dataclasses.asdict(config)))
    results = [r for r in (_done(j) for j in jobs) if r is not None] if resume else []
    todo = [j for j in jobs if not resume or _done(j) is None]
    bar = _progress(len(jobs), len(results), progress)
    if runner is not None:
        for result in runner(run_job, todo):
            results.append(result)
            bar(1)
    elif workers <= 1:
        for job in todo:
            results.append(run_job(job))
            bar(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context()) as pool:
            for fut in as_completed([pool.submit(run_job, job) for job in todo]):
                results.append(fut.result())
                bar(1)
    bar(0, close=True)
    return write_report(config, windows, results, out)


def _worker_context() -> Any:
    """Worker processes forked from a fresh server that has imported stockgym (and torch)
    once: fast to start, and safe (this process may hold torch's thread pools, which a
    plain fork would copy mid-flight). Spawn where there is no forkserver."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["stockgym.experiment.evaluate", "stockgym.experiment.train"])
    return ctx


def _progress(total: int, done: int, show: bool):
    """A tqdm bar on a terminal, a line every 10 % otherwise (nothing when not ``show``)."""
    import sys

    state = {"n": done, "next": 0.1}
    bar = None
    if show and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, desc="evaluate", unit="run", leave=False)

    def step(n: int, close: bool = False) -> None:
        state["n"] += n
        if bar is not None:
            bar.update(n)
            if close:
                bar.close()
        elif show and total and (state["n"] / total >= state["next"] or close):
            print(f"evaluate: {state['n']}/{total} runs", file=sys.stderr, flush=True)
            while state["next"] <= state["n"] / total:
                state["next"] += 0.1

    return step
