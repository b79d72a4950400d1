"""``stockgym quickstart``: the whole pipeline once, end to end, on the bundled sample.

Offline and on CPU, in a few minutes: one symbol of the bundled real data (default
AAPL) goes through every part of the project, each step through the same code path as
its own command, and every step's outputs (with their resolved configs) land in one
directory:

1. **data** - ``load_prices(symbol, source="sample")``, the default date split (test =
   last 20 % of dates, validation = last 20 % of the rest), the trailing-window
   features. ``data/summary.json``.
2. **forecaster** - a small LSTM trained on the training period, early-stopped on the
   validation period, scored once on the test period against the naive and linear
   forecasts (``stockgym forecast train``): ``forecaster/``. And walk-forward LSTM
   forecasts (the forecast dated t made after close t by a model trained only on
   targets dated <= t; ``stockgym forecast walk-forward``): ``walk_forward/``.
3. **agents** - PPO whose LSTM backbone starts from the forecaster (``pretrained``),
   and DQN with an MLP backbone, trained on the training period by
   :func:`stockgym.experiment.train` (the code of ``stockgym train``), validated on the
   validation period while they learn: ``agents/ppo/``, ``agents/dqn/``.
4. **backtest** - each agent on the held-out test period (``stockgym backtest --model``),
   and the walk-forward forecasts as a signal (``forecast_sign``: long while the forecast
   is above 0), each against buy-and-hold of the same symbol over the same dates with
   the same costs: ``backtests/*/``; one table and one plot of all of them
   (``stockgym compare``): ``compare/``.
5. **signal** - PPO's action for the trading day after the last bar (``stockgym
   signal``): ``signal.json``.

Then it prints the comparison table, says plainly whether each agent beat buy-and-hold
on the test period, and where the plots, checkpoints and TensorBoard logs are.
``quickstart.json`` (the resolved quickstart config, written first) and
``summary.json`` (results, verdicts and timings, written last: its presence means the
run finished) sit at the top; ``logs/`` holds the full output of every step. Every file
is written atomically.

Market-time rules, the same for every backtest here: decisions after the close of day
t, orders filled at the open of day t+1 (plus slippage), commission and taxes charged,
whole shares, nothing computed from data after t. The test period is touched only by
the backtests (and the forecaster's one final score), never for training or selection.

Budgets: ``"default"`` (about 2-4 minutes on 2 CPU cores) and ``"small"`` (under a minute;
for tests and a first look - the agents learn almost nothing in it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockgym.core import torch_threads

QUICKSTART_EXAMPLES = """examples:
  stockgym quickstart                              (AAPL, about 2-4 minutes on 2 CPU cores)
  stockgym quickstart --symbol MSFT --seed 1 --out runs/qs-msft
  stockgym quickstart --budget small               (under a minute; the agents learn almost nothing)
  stockgym quickstart --ppo-steps 300000 --dqn-steps 0      (longer PPO, no DQN)

Everything goes into --out DIR (default runs/quickstart-<time>): data/, forecaster/,
walk_forward/, agents/ppo/, agents/dqn/, backtests/, compare/ (table + equity.png),
signal.json, logs/, quickstart.json (resolved config), summary.json (results).
Watch training with: tensorboard --logdir DIR
"""


@dataclass(frozen=True)
class Budget:
    """How much compute each step gets.

    ``forecaster_epochs`` (maximum epochs of the LSTM forecaster), ``patience`` (its
    early stopping, and each walk-forward refit's: epochs without a validation gain),
    ``walk_forward_every`` (rows between walk-forward refits),
    ``walk_forward_min_train`` (training samples before the first walk-forward
    forecast), ``walk_forward_epochs`` (maximum epochs per refit), ``ppo_steps`` /
    ``dqn_steps`` (env steps, all envs counted; 0 skips the agent), ``num_envs``
    (training envs stepped together), ``eval_freq`` (env steps between validation
    backtests; 0: only at the end), ``dqn_learning_starts`` (env steps before DQN's
    first update).
    """

    forecaster_epochs: int
    patience: int
    walk_forward_every: int
    walk_forward_min_train: int
    walk_forward_epochs: int
    ppo_steps: int
    dqn_steps: int
    num_envs: int
    eval_freq: int
    dqn_learning_starts: int


BUDGETS: dict[str, Budget] = {
    "default": Budget(forecaster_epochs=30, patience=5, walk_forward_every=252,
                      walk_forward_min_train=750, walk_forward_epochs=20, ppo_steps=100_000,
                      dqn_steps=50_000, num_envs=32, eval_freq=20_000,
                      dqn_learning_starts=2_000),
    "small": Budget(forecaster_epochs=2, patience=1, walk_forward_every=1_000,
                    walk_forward_min_train=750, walk_forward_epochs=2, ppo_steps=1_024,
                    dqn_steps=1_024, num_envs=8, eval_freq=512, dqn_learning_starts=256),
}

#: The small LSTM forecaster (and PPO's backbone): window in bars, one LSTM layer.
FORECASTER = {"model": "lstm", "window": 20, "hidden_size": 32, "num_layers": 1,
              "dropout": 0.0, "batch_size": 128}
#: Cost preset of the bundled sample (US listings).
MARKET = "us"
STEPS = ("data", "forecaster", "agents", "backtest", "signal")
#: Total returns closer than this (0.005 percentage points) count as the same result.
TIE = 5e-5


@dataclass
class QuickstartConfig:
    """The resolved quickstart (``quickstart.json``): ``symbol`` (one of
    ``stockgym.data.sample_symbols()``), ``out`` (the output directory), ``budget``
    (a :data:`BUDGETS` name) and its :class:`Budget` values with the ``ppo_steps`` /
    ``dqn_steps`` overrides applied, ``seed``, ``device`` (torch device for the
    networks; ``cpu`` by default: these models are small), ``threads`` (torch CPU
    threads, restored afterwards)."""

    symbol: str = "AAPL"
    out: str = ""
    budget: str = "default"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    ppo_steps: int | None = None
    dqn_steps: int | None = None

    def resolved_budget(self) -> Budget:
        b = BUDGETS[self.budget]
        changes = {k: v for k, v in (("ppo_steps", self.ppo_steps),
                                     ("dqn_steps", self.dqn_steps)) if v is not None}
        return dataclasses.replace(b, **changes)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        from stockgym.data import sample_symbols

        if self.symbol not in sample_symbols():
            raise ValueError(f"quickstart runs on the bundled sample: symbol must be one of "
                             f"{', '.join(sample_symbols())}, got {self.symbol!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        for name in ("seed",):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.ppo_steps is not None and (not isinstance(self.ppo_steps, int)
                                           or self.ppo_steps < 1):
            raise ValueError(f"ppo_steps must be an integer >= 1 (PPO always runs), "
                             f"got {self.ppo_steps!r}")
        if self.dqn_steps is not None and (not isinstance(self.dqn_steps, int)
                                           or self.dqn_steps < 0):
            raise ValueError(f"dqn_steps must be an integer >= 0 (0 skips DQN), "
                             f"got {self.dqn_steps!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")
        from stockgym.core import resolve_device

        resolve_device(self.device)  # ValueError naming an unknown or absent device


@dataclass
class QuickstartResult:
    """What :func:`run_quickstart` returns: the output directory, the ``summary.json``
    dict and the comparison table as printed."""

    out: Path
    summary: dict[str, Any]
    table: str


# ---------------------------------------------------------------------------- helpers
def default_out() -> Path:
    """``runs/quickstart-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"quickstart-{stamp}"
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def check_out(out: str | Path) -> Path:
    """``out`` as a Path; ``ValueError`` unless it is absent or an empty directory."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty directory; "
                         "choose a new one (nothing was written)")
    return out


class _Step:
    """Times one step and keeps what it printed (written to ``logs/<name>.txt``)."""

    def __init__(self, out: Path, name: str, timings: dict[str, float]) -> None:
        self.out, self.name, self.timings = out, name, timings
        self.buffer = io.StringIO()

    def __enter__(self) -> _Step:
        self.t0 = time.perf_counter()
        self._redirect = contextlib.redirect_stdout(self.buffer)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._redirect.__exit__(*exc)
        self.timings[self.name] = round(time.perf_counter() - self.t0, 2)
        from stockgym.core import write_text

        write_text(self.out / "logs" / f"{self.name}.txt", self.buffer.getvalue())


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.2f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


# ---------------------------------------------------------------------------- steps
def _step_data(cfg: QuickstartConfig, out: Path) -> dict[str, Any]:
    from stockgym.data import DEFAULT_FEATURES, build_features, load_prices, split
    from stockgym.core import write_json
    from stockgym.forecasters.storage import data_hash

    prices = load_prices(cfg.symbol, source="sample")
    dates = split(prices).dates
    feats = build_features(prices, DEFAULT_FEATURES)
    info = {
        "symbol": cfg.symbol, "source": "sample", "adjusted": prices.attrs.get("adjusted"),
        "first": str(prices.index[0].date()), "last": str(prices.index[-1].date()),
        "rows": len(prices), "halted_days": int((~prices["tradable"]).sum()),
        "sha256": data_hash(prices), "splits": dates,
        "features": list(feats.columns), "feature_rows": len(feats),
        "warm_up_rows_dropped": len(prices) - len(feats),
    }
    write_json(out / "data" / "summary.json", info)
    return {"prices": prices, "dates": dates, "info": info}


def _forecast_config(cfg: QuickstartConfig, budget: Budget, **changes: Any) -> Any:
    from stockgym.forecasters.training import ForecastConfig

    return ForecastConfig(symbol=cfg.symbol, source="sample", seed=cfg.seed, device=cfg.device,
                          threads=cfg.threads, epochs=budget.forecaster_epochs,
                          patience=budget.patience, progress=False, **FORECASTER, **changes)


def _step_forecaster(cfg: QuickstartConfig, budget: Budget, out: Path, data: dict[str, Any]
                     ) -> dict[str, Any]:
    from stockgym.forecasters.evaluation import format_table
    from stockgym.forecasters.training import train as train_forecaster
    from stockgym.forecasters.walkforward import WalkForwardConfig, run_walk_forward

    dates = data["dates"]
    # the agents' split: the forecaster's validation period is theirs, so PPO may start
    # from it (a forecaster that saw the test period is refused by stockgym.agents.train)
    fc_cfg = _forecast_config(cfg, budget, train_end=dates["train"]["last"],
                              valid_end=dates["valid"]["last"],
                              run_dir=str(out / "forecaster"))
    res = train_forecaster(fc_cfg, prices=data["prices"])
    print(f"trained {fc_cfg.model} on {cfg.symbol}: best epoch {res.fit.best_epoch} of "
          f"{len(res.fit.history)}, {res.fit.seconds:.1f} s")
    print(format_table(res.metrics))

    wf_fc = _forecast_config(cfg, budget, run_dir=None)
    wf_fc = wf_fc.replace(epochs=budget.walk_forward_epochs)
    wf_cfg = WalkForwardConfig(forecast=wf_fc, refit_every=budget.walk_forward_every,
                               min_train=budget.walk_forward_min_train)
    wf = run_walk_forward(wf_cfg, out / "walk_forward", prices=data["prices"], cache=False)
    refits = wf.forecasts.attrs.get("refits", [])
    print(f"walk-forward {wf_fc.model}: {len(refits)} refits every {wf_cfg.refit_every} rows, "
          f"forecasts {wf.forecasts.index[0].date()}..{wf.forecasts.index[-1].date()}, "
          f"{wf.seconds:.1f} s")
    print(format_table(wf.metrics, period="forecast period"))
    return {
        "forecaster": {"dir": str(out / "forecaster"), "best_epoch": res.fit.best_epoch,
                       "epochs": len(res.fit.history), "test": res.metrics},
        "walk_forward": {"dir": str(out / "walk_forward"), "refits": len(refits),
                         "metrics": wf.metrics},
    }


def _train_config(cfg: QuickstartConfig, budget: Budget, out: Path, algo: str) -> Any:
    from stockgym.experiment import DataSpec, EnvSpec, TrainConfig

    if algo == "ppo":  # the LSTM backbone starts from the forecaster (its window, features, scaler)
        steps = budget.ppo_steps
        agent: dict[str, Any] = {"backbone": "lstm", "pretrained": str(out / "forecaster")}
    else:
        steps = budget.dqn_steps
        agent = {"backbone": "mlp", "learning_starts": min(budget.dqn_learning_starts, steps)}
    agent["threads"] = cfg.threads
    return TrainConfig(
        algo=algo, total_timesteps=steps, seed=cfg.seed, device=cfg.device,
        eval_freq=budget.eval_freq, run_dir=str(out / "agents" / algo), progress=False,
        data=DataSpec(symbols=[cfg.symbol], source="sample"),
        env=EnvSpec(market=MARKET, num_envs=budget.num_envs), agent=agent,
    )


def _step_agents(cfg: QuickstartConfig, budget: Budget, out: Path, data: dict[str, Any]
                 ) -> dict[str, Any]:
    from stockgym.experiment import train
    from stockgym.experiment.train import format_summary

    runs: dict[str, Any] = {}
    for algo in ("ppo", "dqn"):
        tc = _train_config(cfg, budget, out, algo)
        if tc.total_timesteps == 0:
            print(f"{algo.upper()} skipped (0 steps)")
            continue
        result = train(tc, prices=data["prices"])
        print(format_summary(result))
        s = result.summary
        runs[algo] = {"dir": str(result.run_dir), "backbone": result.record["agent"]["backbone"],
                      "pretrained": result.record["forecaster"] is not None,
                      "timesteps": s["timesteps"], "seconds": s["seconds"], "sps": s["sps"],
                      "valid": s["valid"]}
    return runs


LABELS = {"ppo": "PPO", "dqn": "DQN", "forecast_sign": "walk-forward LSTM > 0"}


def _step_backtest(cfg: QuickstartConfig, out: Path, agents: dict[str, Any]
                   ) -> dict[str, Any]:
    from stockgym.backtest.compare import load_run, text_table, write_compare
    from stockgym.backtest import make_strategy
    from stockgym.backtest.report import atomic_dir, write_backtest
    from stockgym.backtest.strategy_run import BacktestSpec, backtest_strategy
    from stockgym.experiment import backtest_run
    from stockgym.forecasters.storage import read_json

    dirs: dict[str, Path] = {}
    for algo, run in agents.items():
        dirs[algo] = out / "backtests" / algo
        bt = backtest_run(run["dir"], "test")
        config = bt.report_config(dirs[algo])
        with atomic_dir(dirs[algo]) as tmp:
            write_backtest(bt.result, tmp, config)
    dirs["forecast_sign"] = out / "backtests" / "forecast_sign"
    spec = BacktestSpec(symbols=[cfg.symbol], source="sample", period="test", market=MARKET,
                        forecast=str(out / "walk_forward"))
    result, config = backtest_strategy(spec, make_strategy("forecast_sign"),
                                       out=dirs["forecast_sign"])
    with atomic_dir(dirs["forecast_sign"]) as tmp:
        write_backtest(result, tmp, config)
    runs = [load_run(d, LABELS[k]) for k, d in dirs.items()]
    with atomic_dir(out / "compare") as tmp:
        frame = write_compare(runs, tmp)
    table = text_table(frame)
    print(table)
    results = {}
    for key, d in dirs.items():
        m = read_json(d / "metrics.json", "backtest metrics")
        c = read_json(d / "config.json", "backtest config")
        results[key] = {"dir": str(d), "label": LABELS[key], "metrics": m,
                        "period": c["backtest"], "costs": c["env"]["costs"],
                        "fill": c["env"]["fill"]}
    return {"results": results, "table": table}


def _step_signal(out: Path, data: dict[str, Any]) -> dict[str, Any]:
    from stockgym.experiment import load_run, run_env
    from stockgym.agents.signals import next_signal
    from stockgym.core import write_json

    run_dir = out / "agents" / "ppo"
    record, agent = load_run(run_dir)
    env = run_env(run_dir, record, data["prices"])
    sig = next_signal(agent, env)
    write_json(out / "signal.json", sig)
    return sig


def verdict(label: str, metrics: dict[str, Any], period: dict[str, Any]) -> str:
    """One honest sentence: did ``label`` beat buy-and-hold over ``period`` (after costs,
    by total return)? ``metrics`` is a backtest's ``metrics.json`` dict."""
    r, b = metrics.get("total_return"), (metrics.get("benchmark") or {}).get("total_return")
    sr, sb = metrics.get("sharpe"), (metrics.get("benchmark") or {}).get("sharpe")
    span = f"the test period {period['first']}..{period['last']}"
    numbers = (f"total return {_pct(r)} vs {_pct(b)} after costs, Sharpe {_num(sr)} vs "
               f"{_num(sb)}")
    if r is None or b is None:
        return f"{label}: no comparison with buy-and-hold on {span} ({numbers})"
    if abs(r - b) < TIE:
        return (f"{label} did not beat buy-and-hold on {span}: it did the same ({numbers}; "
                f"it held the stock, or traded to the same result)")
    if r > b:
        return (f"{label} beat buy-and-hold on {span} by {(r - b) * 100:.2f} percentage points "
                f"({numbers})")
    return f"{label} did not beat buy-and-hold on {span}: {numbers}"


# ---------------------------------------------------------------------------- main
def run_quickstart(config: QuickstartConfig | None = None, *,
                   echo: Callable[[str], None] = print, **fields: Any) -> QuickstartResult:
    """Run the quickstart (module docstring) and return its :class:`QuickstartResult`.

    ``config`` or its fields as keywords (``symbol``, ``out``, ``budget``, ``seed``,
    ``device``, ``threads``, ``ppo_steps``, ``dqn_steps``); ``echo`` prints the
    progress lines and the final report. The output directory must be new or empty. A
    run that fails removes the directory it created (a Ctrl-C keeps it).
    """
    from stockgym.core import write_json

    cfg = dataclasses.replace(config or QuickstartConfig(), **fields)
    cfg.validate()
    out = Path(cfg.out) if cfg.out else default_out()
    check_out(out)  # ValueError before anything is written
    cfg.out = str(out)
    budget = cfg.resolved_budget()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        with torch_threads(cfg.threads):
            summary, table = _run(cfg, budget, out, timings, echo)
    except KeyboardInterrupt:
        raise
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for p in out.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    timings["total"] = round(time.perf_counter() - t_start, 2)
    summary["seconds"] = timings
    write_json(out / "summary.json", summary)
    echo(f"done in {timings['total']:.0f} s ("
         + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total") + ")")
    return QuickstartResult(out, summary, table)


def _run(cfg: QuickstartConfig, budget: Budget, out: Path, timings: dict[str, float],
         echo: Callable[[str], None]) -> tuple[dict[str, Any], str]:
    import stockgym
    from stockgym.experiment.records import git_commit
    from stockgym.core import write_json

    write_json(out / "quickstart.json", {
        "format": "stockgym.quickstart", "version": 1,
        "config": dataclasses.asdict(cfg), "budget": dataclasses.asdict(budget),
        "forecaster": FORECASTER, "market": MARKET, "stockgym": stockgym.__version__,
        "git": git_commit(),
        "command": "stockgym quickstart " + " ".join(_flags(cfg)),
    })
    n = len(STEPS)
    echo(f"stockgym quickstart: {cfg.symbol} from the bundled sample (offline), budget "
         f"{cfg.budget}, seed {cfg.seed}, device {cfg.device} -> {out}/")

    with _Step(out, "data", timings):
        data = _step_data(cfg, out)
    d, s = data["info"], data["dates"]
    echo(f"[1/{n}] data        {d['rows']:,} daily bars {d['first']}..{d['last']} "
         f"({'split/dividend-adjusted' if d['adjusted'] else 'raw'}), "
         f"{len(d['features'])} trailing-window features")
    echo("      " + "  ".join(f"{k} {v['first']}..{v['last']} ({v['rows']})" for k, v in s.items()))

    with _Step(out, "forecaster", timings):
        fc = _step_forecaster(cfg, budget, out, data)
    m, wf = fc["forecaster"]["test"], fc["walk_forward"]["metrics"]
    echo(f"[2/{n}] forecaster  LSTM (window {FORECASTER['window']}, hidden "
         f"{FORECASTER['hidden_size']}), next-day log return, test period: skill "
         f"{m['model']['skill']:+.4f} vs the naive zero forecast (linear "
         f"{m['baselines']['linear']['skill']:+.4f}), directional accuracy "
         f"{m['model']['directional_accuracy']:.3f} (naive "
         f"{m['baselines']['naive']['directional_accuracy']:.3f})")
    echo(f"      walk-forward LSTM: {fc['walk_forward']['refits']} refits, out-of-sample "
         f"skill {wf['model']['skill']:+.4f} over {wf['period']['first']}..{wf['period']['last']}"
         f" ({timings['forecaster']:.0f} s)")

    with _Step(out, "agents", timings):
        agents = _step_agents(cfg, budget, out, data)
    for algo, a in agents.items():
        v = a["valid"]
        what = "LSTM backbone from the forecaster" if a["pretrained"] else f"{a['backbone'].upper()}"
        echo(f"[3/{n}] agent       {algo.upper()} ({what}): {a['timesteps']:,} steps in "
             f"{a['seconds']:.0f} s; validation log return {v['agent']['return']:+.3f} "
             f"(buy-and-hold {v['buy_and_hold']['return']:+.3f})")

    with _Step(out, "backtest", timings):
        bt = _step_backtest(cfg, out, agents)
    first = next(iter(bt["results"].values()))
    from stockgym.backtest.report import format_costs

    p = first["period"]
    echo(f"[4/{n}] backtest    test period {p['first']}..{p['last']} ({p['days']} trading "
         f"days), never used for training or selection")
    echo(f"      decisions after each close, orders filled at the "
         f"{'next open' if first['fill'] == 'open' else 'same close'}; costs ({MARKET}): "
         f"{format_costs(first['costs'])}")
    echo("")
    echo(bt["table"])
    echo("")

    with _Step(out, "signal", timings):
        sig = _step_signal(out, data)
    orders = ", ".join(
        f"{o['symbol']} target weight {o['target_weight']:.0%}"
        + (f" ({'buy' if o['shares'] > 0 else 'sell'} {abs(o['shares']):g} shares)"
           if o["shares"] else "") for o in sig["orders"])
    echo(f"[5/{n}] signal      PPO after the close of {sig['date']} (the last bar), from all "
         f"cash: {orders}, at the next open")
    echo("")

    verdicts = {k: verdict(r["label"], r["metrics"], r["period"])
                for k, r in bt["results"].items()}
    for v in verdicts.values():
        echo(v)
    echo("(one symbol, one seed, one test period: a single run like this is weak evidence "
         "either way; try --seed and --symbol)")
    echo("")
    echo(f"outputs in {out}/")
    echo(f"  comparison   {out / 'compare' / 'compare.md'}  plot {out / 'compare' / 'equity.png'}")
    for r in bt["results"].values():
        echo(f"  backtest     {r['dir']}/ (metrics.json equity.csv trades.csv equity.png "
             f"drawdown.png trades.png)")
    echo(f"  forecaster   {out / 'forecaster' / 'checkpoint'}/  plots "
         f"{out / 'forecaster' / 'plots'}/  walk-forward {out / 'walk_forward' / 'forecasts.csv'}")
    for algo, a in agents.items():
        echo(f"  {algo} model    {a['dir']}/model/  (config.json: resolved config)")
    echo(f"  TensorBoard  tensorboard --logdir {out}")
    echo(f"  next         stockgym backtest --model {out / 'agents' / 'ppo'} --period valid "
         f"--out {out / 'more'};  stockgym signal --model {out / 'agents' / 'ppo'}")

    summary = {
        "format": "stockgym.quickstart.summary", "version": 1,
        "symbol": cfg.symbol, "budget": cfg.budget, "seed": cfg.seed,
        "data": d, "forecaster": fc["forecaster"], "walk_forward": fc["walk_forward"],
        "agents": agents,
        "backtests": {k: {"dir": r["dir"], "label": r["label"], "period": r["period"],
                          "metrics": r["metrics"],
                          "beat_buy_and_hold": _beat(r["metrics"])}
                      for k, r in bt["results"].items()},
        "verdicts": verdicts,
        "signal": sig,
        "tensorboard": f"tensorboard --logdir {out}",
    }
    from stockgym.experiment.records import json_ready

    return json_ready(summary), bt["table"]


def _beat(metrics: dict[str, Any]) -> bool | None:
    r, b = metrics.get("total_return"), (metrics.get("benchmark") or {}).get("total_return")
    return None if r is None or b is None else bool(r > b and abs(r - b) >= TIE)


def _flags(cfg: QuickstartConfig) -> list[str]:
    flags = ["--symbol", cfg.symbol, "--budget", cfg.budget, "--seed", str(cfg.seed),
             "--device", cfg.device, "--out", cfg.out]
    if cfg.threads is not None:
        flags += ["--threads", str(cfg.threads)]
    for name in ("ppo_steps", "dqn_steps"):
        if getattr(cfg, name) is not None:
            flags += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return flags
