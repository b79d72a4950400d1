"""Evaluating agents and runs on a period of the data, through the backtest engine
(:func:`stockgym.backtest.run_policy`: the env's next-open fills and costs).

:func:`backtest_run` is the library function behind ``stockgym backtest --model``:
a trained run, backtested on one part of its split with the run's env and costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest import hold_env, run_policy
from stockgym.backtest.metrics import sharpe
from stockgym.backtest.strategies import BuyAndHold
from stockgym.experiment.config import DataSpec
from stockgym.experiment.records import load_data, load_run, run_data_spec, run_env


def evaluate_on(
    agent: Any, env: Any, period: tuple[str, str], benchmark: bool = False
) -> tuple[dict[str, float], Any]:
    """Backtest ``agent`` deterministically on ``period`` of ``env`` (a StockTradingEnv):
    ``({"return": log(V_end / V_0), "sharpe", "final_value"}, BacktestResult)``; with
    ``benchmark`` the result holds buy-and-hold over the same dates and costs."""
    res = run_policy(agent, env, period, benchmark=True if benchmark else None)
    return _summary(res), res


def buy_and_hold(env: Any, period: tuple[str, str]) -> dict[str, float]:
    """Buy-and-hold of ``env``'s symbols over ``period`` with its costs, fill rule and
    cash (the benchmark every backtest report shows), summarised like :func:`evaluate_on`."""
    return _summary(run_policy(BuyAndHold(), hold_env(env), period, benchmark=None))


def _summary(res: Any) -> dict[str, float]:
    v = res.record["value"]
    sr = float(sharpe(res.returns))
    # a policy that never holds anything has no Sharpe ratio (zero variance): report 0
    return {
        "return": float(np.log(v.iloc[-1] / v.iloc[0])),
        "sharpe": sr if math.isfinite(sr) else 0.0,
        "final_value": float(v.iloc[-1]),
    }


def random_policy_return(env: Any, period: tuple[str, str], seed: int) -> float:
    """Log return of a policy drawing uniformly random actions from ``env``'s action
    space every day (seeded), through ``env`` with its costs."""
    space = env.action_space
    space.seed(seed)
    return _summary(run_policy(lambda obs: space.sample(), env, period, benchmark=None))["return"]


def holdout_returns(
    run_dir: str | Path, period: str = "test", n_random: int = 5, prices: pd.DataFrame | None = None
) -> dict[str, float]:
    """After-cost log returns over one part of a run's split (default the held-out test
    period) of the trained agent (deterministic), buy-and-hold and the mean of
    ``n_random`` random policies (seeds 0..n_random-1), all through the run's env."""
    record, agent = load_run(run_dir)
    if prices is None:
        prices = load_data(run_data_spec(record))
    env = run_env(run_dir, record, prices)
    part = record["splits"][period]
    dates = (part["first"], part["last"])
    out = {
        "agent": evaluate_on(agent, env, dates)[0]["return"],
        "buy_and_hold": buy_and_hold(env, dates)["return"],
    }
    if n_random:
        out["random"] = float(
            np.mean([random_policy_return(env, dates, k) for k in range(n_random)])
        )
    return out


# ------------------------------------------------------------------ a trained run
@dataclass
class RunBacktest:
    """A trained run backtested on one period (:func:`backtest_run`)."""

    run_dir: Path
    record: dict[str, Any]
    agent: Any
    env: Any
    prices: pd.DataFrame
    spec: DataSpec
    period_name: str
    result: Any

    def report_config(self, out: str | Path, risk_free: float = 0.0) -> dict[str, Any]:
        """The ``config.json`` of the backtest's output dir (what ran, on what, how)."""
        from stockgym.envs.costs import market_of

        rec, env, spec, prices = self.record, self.env, self.spec, self.prices
        algo = rec["config"]["algo"]
        market = rec["config"]["env"]["market"]
        run = str(self.run_dir.resolve())
        return {
            "command": f"stockgym backtest --model {self.run_dir} --out {out}",
            "strategy": {
                "name": f"{algo}_agent",
                "params": {"run_dir": run},
                "description": f"{algo.upper()} agent ({rec['agent']['backbone']}, "
                f"run {self.run_dir.name})",
            },
            "seed": rec["config"]["seed"],
            "data": {
                "source": spec.source,
                "symbols": list(spec.symbols),
                "period": self.period_name,
                "loaded": {
                    "first": str(prices.index[0].date()),
                    "last": str(prices.index[-1].date()),
                    "rows": len(prices),
                },
            },
            "splits": rec["splits"],
            "backtest": {**self.result.period, "note": None},
            "market": market_of(env.symbols[0]) if market == "auto" else market,
            "env": env.config(),
            "benchmark": {
                "kind": "buy_and_hold",
                "symbols": list(env.symbols),
                "source": spec.source,
                "same_costs": True,
            },
            "model": {"run_dir": run, "algo": algo, "trained_steps": self.agent.num_timesteps},
            "risk_free": risk_free,
            "out": str(out),
        }


def run_data(
    record: dict[str, Any],
    symbols: list[str] | None = None,
    source: str | None = None,
    cache_dir: str | None = None,
    **changes: Any,
) -> DataSpec:
    """The run's data spec with other ``symbols`` (as many as the run trades), ``source``
    or ``cache_dir`` (``ValueError`` naming a symbol-count mismatch)."""
    trained_on = record["config"]["data"]["symbols"]
    if symbols:
        if len(symbols) != len(trained_on):
            raise ValueError(
                f"the model trades {len(trained_on)} symbol(s) ({' '.join(trained_on)}), "
                f"got {len(symbols)} ({' '.join(symbols)})"
            )
        changes["symbols"] = list(symbols)
    if source and source != "auto":
        changes["source"] = source
    if cache_dir:
        changes["cache_dir"] = cache_dir
    return run_data_spec(record, **changes)


def fitted_env(run_dir: str | Path, record: dict[str, Any], prices: pd.DataFrame, agent: Any):
    """:func:`run_env` over ``prices``, checked to fit ``agent`` (``ValueError`` naming
    what differs)."""
    env = run_env(run_dir, record, prices)
    agent.check_env(env)
    return env


def backtest_run(
    run_dir: str | Path,
    period: str | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    symbols: list[str] | None = None,
    source: str | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    trust: bool = False,
) -> RunBacktest:
    """Backtest the trained agent of ``run_dir`` deterministically with the run's env
    (features, window, fitted scaler, costs) on ``period``: ``"train" | "valid" |
    "test"`` (a part of the run's split; default ``"test"``) or ``"all"`` (every bar
    with a full window, cut to ``start`` / ``end``; the default when either is given).
    Buy-and-hold over the same dates and costs is the benchmark. ``trust`` loads an
    unsigned stable-baselines3 model anyway (see SECURITY.md)."""
    record, agent = load_run(run_dir, device=device, trust=trust)
    period_name = period or ("test" if start is None and end is None else "all")
    if period_name not in ("train", "valid", "test", "all"):
        raise ValueError(f"period must be train, valid, test or all, got {period_name!r}")
    spec = run_data(record, symbols, source, cache_dir)
    prices = load_data(spec)
    env = fitted_env(run_dir, record, prices, agent)
    if period_name == "all":
        first = env.market.dates[env.window_size - 1]
        dates = (max(start, first) if start is not None else first, end)
    else:
        part = record["splits"][period_name]
        dates = (pd.Timestamp(part["first"]), pd.Timestamp(part["last"]))
    result = run_policy(agent, env, dates, benchmark=True, progress=progress)
    return RunBacktest(Path(run_dir), record, agent, env, prices, spec, period_name, result)
