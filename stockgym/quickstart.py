"""``stockgym quickstart``: the whole pipeline once, end to end, on the bundled sample, and
the one question answered honestly: does an agent that sees a neural forecast beat
buy-and-hold out of sample, by more than luck?

Offline and on CPU, in about 1.5 minutes on 2 CPU cores: one symbol of the bundled real
data (default AAPL) goes through every part of the project, each step through the same
code path as its own command, and every step's outputs (with their resolved configs)
land in one directory:

1. **data** - ``load_prices(symbol, source="sample")``, the default date split and the
   trailing-window features. ``data/summary.json``.
2. **forecaster** - a small LSTM trained on the training period, early-stopped on the
   validation period, scored once on the test period against the naive and linear
   forecasts (``stockgym forecast train``): ``forecaster/``.
3. **evaluate** - ``stockgym evaluate`` in small: the last ``windows`` test windows of
   ``window_days`` rows; for each window and seed a PPO agent whose observation holds
   walk-forward LSTM forecasts is trained only on the rows before the window and
   backtested once on it; the same agent without the forecasts (the ablation) and four
   baselines (buy-and-hold, SMA crossover, the forecast's sign, random) on the same
   windows and costs. A table with 95 % intervals and one verdict per policy
   (``"edge"`` only when the whole interval of the excess return over buy-and-hold is
   above 0): ``evaluate/`` (summary.json, results.csv, report.md, plots, every run).
4. **signal** - the last window's agent (seed of the run), on the latest bar
   (``stockgym signal``): ``signal.json``.

``quickstart.json`` (the resolved quickstart config, written first) and
``summary.json`` (results, verdicts and timings, written last: its presence means the
run finished) sit at the top; ``logs/`` holds the full output of every step. Every file
is written atomically.

Market-time rules, the same for every backtest here: decisions after the close of day
t, orders filled at the open of day t+1 (plus slippage), commission and taxes charged,
whole shares, nothing computed from data after t. Each test window is touched only by
its backtests, never for training or selection.

Budgets: ``"default"`` (about 1.5 minutes on 2 CPU cores) and ``"small"`` (under a minute;
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
  stockgym quickstart                              (AAPL, about 1.5 minutes on 2 CPU cores)
  stockgym quickstart --symbol MSFT --seed 1 --out runs/qs-msft
  stockgym quickstart --budget small               (under a minute; the agents learn almost nothing)
  stockgym quickstart --ppo-steps 60000            (longer training per window)

Everything goes into --out DIR (default runs/quickstart-<time>): data/, forecaster/,
evaluate/ (summary.json, results.csv, report.md, excess_by_window.png, equity.png, runs/),
signal.json, logs/, quickstart.json (resolved config), summary.json (results).
"""


@dataclass(frozen=True)
class Budget:
    """How much compute each step gets.

    ``forecaster_epochs`` / ``patience``: the LSTM forecaster's maximum epochs and early
    stopping; ``windows`` x ``window_days``: the test windows; ``seeds``: agent seeds per
    window; ``ppo_steps``: env steps per agent run (all envs counted); ``num_envs``;
    ``forecast_every`` / ``forecast_min_train`` / ``forecast_epochs``: the walk-forward
    forecast features (rows between refits, samples before the first, epochs per refit).
    """

    forecaster_epochs: int
    patience: int
    windows: int
    window_days: int
    seeds: int
    ppo_steps: int
    num_envs: int
    forecast_every: int
    forecast_min_train: int
    forecast_epochs: int


BUDGETS: dict[str, Budget] = {
    "default": Budget(
        forecaster_epochs=30,
        patience=5,
        windows=3,
        window_days=252,
        seeds=2,
        ppo_steps=100_000,
        num_envs=32,
        forecast_every=252,
        forecast_min_train=750,
        forecast_epochs=20,
    ),
    "small": Budget(
        forecaster_epochs=2,
        patience=1,
        windows=3,
        window_days=126,
        seeds=2,
        ppo_steps=1_024,
        num_envs=8,
        forecast_every=1_000,
        forecast_min_train=750,
        forecast_epochs=2,
    ),
}

#: The small LSTM forecaster: window in bars, one LSTM layer.
FORECASTER = {
    "model": "lstm",
    "window": 20,
    "hidden_size": 32,
    "num_layers": 1,
    "dropout": 0.0,
    "batch_size": 128,
}
#: Cost preset of the bundled sample (US listings).
MARKET = "us"
STEPS = ("data", "forecaster", "evaluate", "signal")


@dataclass
class QuickstartConfig:
    """The resolved quickstart (``quickstart.json``): ``symbol`` (one of
    ``stockgym.data.sample_symbols()``), ``out`` (the output directory), ``budget``
    (a :data:`BUDGETS` name) and its :class:`Budget` values with the ``ppo_steps``
    override applied, ``seed`` (the first agent seed; the others follow), ``device``
    (torch device for the networks; ``cpu`` by default: these models are small),
    ``threads`` (torch CPU threads, restored afterwards), ``workers`` (processes for the
    evaluation's runs)."""

    symbol: str = "AAPL"
    out: str = ""
    budget: str = "default"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    ppo_steps: int | None = None
    workers: int = 1

    def resolved_budget(self) -> Budget:
        b = BUDGETS[self.budget]
        return b if self.ppo_steps is None else dataclasses.replace(b, ppo_steps=self.ppo_steps)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        from stockgym.data import sample_symbols

        if self.symbol not in sample_symbols():
            raise ValueError(
                f"quickstart runs on the bundled sample: symbol must be one of "
                f"{', '.join(sample_symbols())}, got {self.symbol!r}"
            )
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        for name in ("seed",):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.ppo_steps is not None and (
            not isinstance(self.ppo_steps, int) or self.ppo_steps < 1
        ):
            raise ValueError(
                f"ppo_steps must be an integer >= 1 (PPO always runs), got {self.ppo_steps!r}"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers!r}")
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
        raise ValueError(
            f"--out {out} already exists and is not an empty directory; "
            "choose a new one (nothing was written)"
        )
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
    from stockgym.core import write_json
    from stockgym.data import DEFAULT_FEATURES, build_features, load_prices, split
    from stockgym.forecasters.storage import data_hash

    prices = load_prices(cfg.symbol, source="sample")
    dates = split(prices).dates
    feats = build_features(prices, DEFAULT_FEATURES)
    info = {
        "symbol": cfg.symbol,
        "source": "sample",
        "adjusted": prices.attrs.get("adjusted"),
        "first": str(prices.index[0].date()),
        "last": str(prices.index[-1].date()),
        "rows": len(prices),
        "halted_days": int((~prices["tradable"]).sum()),
        "sha256": data_hash(prices),
        "splits": dates,
        "features": list(feats.columns),
        "feature_rows": len(feats),
        "warm_up_rows_dropped": len(prices) - len(feats),
    }
    write_json(out / "data" / "summary.json", info)
    return {"prices": prices, "dates": dates, "info": info}


def _forecast_config(cfg: QuickstartConfig, budget: Budget, **changes: Any) -> Any:
    from stockgym.forecasters.training import ForecastConfig

    return ForecastConfig(
        symbol=cfg.symbol,
        source="sample",
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        epochs=budget.forecaster_epochs,
        patience=budget.patience,
        progress=False,
        **FORECASTER,
        **changes,
    )


def _step_forecaster(
    cfg: QuickstartConfig, budget: Budget, out: Path, data: dict[str, Any]
) -> dict[str, Any]:
    from stockgym.forecasters.evaluation import format_table
    from stockgym.forecasters.training import train as train_forecaster

    dates = data["dates"]
    fc_cfg = _forecast_config(
        cfg,
        budget,
        train_end=dates["train"]["last"],
        valid_end=dates["valid"]["last"],
        run_dir=str(out / "forecaster"),
    )
    res = train_forecaster(fc_cfg, prices=data["prices"])
    print(
        f"trained {fc_cfg.model} on {cfg.symbol}: best epoch {res.fit.best_epoch} of "
        f"{len(res.fit.history)}, {res.fit.seconds:.1f} s"
    )
    print(format_table(res.metrics))
    return {
        "dir": str(out / "forecaster"),
        "best_epoch": res.fit.best_epoch,
        "epochs": len(res.fit.history),
        "test": res.metrics,
    }


def evaluate_tree(cfg: QuickstartConfig, budget: Budget) -> dict[str, Any]:
    """The ``stockgym evaluate`` file the quickstart runs (also written as
    ``evaluate/evaluate.toml``, so ``stockgym evaluate`` can rerun or extend it)."""
    forecasts = {
        "model": FORECASTER["model"],
        "window": FORECASTER["window"],
        "hidden_size": FORECASTER["hidden_size"],
        "refit_every": budget.forecast_every,
        "min_train": budget.forecast_min_train,
        "epochs": budget.forecast_epochs,
        "seed": cfg.seed,
        "device": cfg.device,
    }
    return {
        "evaluate": {
            "windows": budget.windows,
            "window_days": budget.window_days,
            "seeds": [cfg.seed + k for k in range(budget.seeds)],
            "baselines": ["buy_and_hold", "sma_cross", "forecast_sign", "random"],
            "ablate_forecasts": True,
            "n_boot": 2000,
        },
        "train": {
            "algo": "ppo",
            "total_timesteps": budget.ppo_steps,
            "device": cfg.device,
            "data": {"symbols": [cfg.symbol], "source": "sample"},
            "env": {"market": MARKET, "num_envs": budget.num_envs, "forecasts": forecasts},
            "agent": {"threads": cfg.threads or 1},
        },
    }


def _step_evaluate(cfg: QuickstartConfig, budget: Budget, out: Path) -> dict[str, Any]:
    import tomli_w

    from stockgym.core import write_text
    from stockgym.experiment.evaluate import EvaluateConfig, evaluate
    from stockgym.experiment.evaluate_report import display_name, sentence, table

    tree = evaluate_tree(cfg, budget)
    summary = evaluate(
        tree, out / "evaluate", workers=cfg.workers, threads=cfg.threads or 1, progress=True
    )
    write_text(out / "evaluate" / "evaluate.toml", tomli_w.dumps(tree))
    text = table(summary)
    config = EvaluateConfig.from_dict(tree)
    labels = {k: display_name(k, config) for k in summary["policies"]}  # "PPO + LSTM forecasts"
    for key, label in labels.items():
        text = text.replace(f"| {key} |", f"| {label} |")
    print(text)
    verdicts = {k: sentence(labels[k], s, summary) for k, s in summary["policies"].items()}
    for v in verdicts.values():
        print(v)
    return {"summary": summary, "table": text, "verdicts": verdicts}


def _step_signal(
    cfg: QuickstartConfig, budget: Budget, out: Path, data: dict[str, Any]
) -> dict[str, Any]:
    from stockgym.agents.signals import next_signal
    from stockgym.core import write_json
    from stockgym.experiment import load_run, run_env

    last = budget.windows - 1
    run_dir = out / "evaluate" / "runs" / cfg.symbol / f"w{last}" / f"agent-s{cfg.seed}" / "run"
    record, agent = load_run(run_dir)
    env = run_env(run_dir, record, data["prices"])
    sig = next_signal(agent, env)
    sig["run_dir"] = str(run_dir)
    sig["trained_through"] = record["splits"]["valid"]["last"]
    write_json(out / "signal.json", sig)
    return sig


def _flags(cfg: QuickstartConfig) -> list[str]:
    flags = [
        "--symbol",
        cfg.symbol,
        "--budget",
        cfg.budget,
        "--seed",
        str(cfg.seed),
        "--device",
        cfg.device,
        "--out",
        cfg.out,
        "--workers",
        str(cfg.workers),
    ]
    if cfg.threads is not None:
        flags += ["--threads", str(cfg.threads)]
    if cfg.ppo_steps is not None:
        flags += ["--ppo-steps", str(cfg.ppo_steps)]
    return flags


# ---------------------------------------------------------------------------- main
def run_quickstart(
    config: QuickstartConfig | None = None, *, echo: Callable[[str], None] = print, **fields: Any
) -> QuickstartResult:
    """Run the quickstart (module docstring) and return its :class:`QuickstartResult`.

    ``config`` or its fields as keywords (``symbol``, ``out``, ``budget``, ``seed``,
    ``device``, ``threads``, ``ppo_steps``, ``workers``); ``echo`` prints the
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
    echo(
        f"done in {timings['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        + ")"
    )
    return QuickstartResult(out, summary, table)


def _run(
    cfg: QuickstartConfig,
    budget: Budget,
    out: Path,
    timings: dict[str, float],
    echo: Callable[[str], None],
) -> tuple[dict[str, Any], str]:
    import stockgym
    from stockgym.core import write_json
    from stockgym.experiment.records import git_commit, json_ready

    write_json(
        out / "quickstart.json",
        {
            "format": "stockgym.quickstart",
            "version": 2,
            "config": dataclasses.asdict(cfg),
            "budget": dataclasses.asdict(budget),
            "forecaster": FORECASTER,
            "market": MARKET,
            "stockgym": stockgym.__version__,
            "git": git_commit(),
            "command": "stockgym quickstart " + " ".join(_flags(cfg)),
        },
    )
    n = len(STEPS)
    echo(
        f"stockgym quickstart: {cfg.symbol} from the bundled sample (offline), budget "
        f"{cfg.budget}, seed {cfg.seed}, device {cfg.device} -> {out}/"
    )

    with _Step(out, "data", timings):
        data = _step_data(cfg, out)
    d = data["info"]
    echo(
        f"[1/{n}] data        {d['rows']:,} daily bars {d['first']}..{d['last']} "
        f"({'split/dividend-adjusted' if d['adjusted'] else 'raw'}), "
        f"{len(d['features'])} trailing-window features"
    )

    with _Step(out, "forecaster", timings):
        fc = _step_forecaster(cfg, budget, out, data)
    m = fc["test"]
    echo(
        f"[2/{n}] forecaster  LSTM (window {FORECASTER['window']}, hidden "
        f"{FORECASTER['hidden_size']}), next-day log return, test period: skill "
        f"{m['model']['skill']:+.4f} vs the naive zero forecast (linear "
        f"{m['baselines']['linear']['skill']:+.4f}), directional accuracy "
        f"{m['model']['directional_accuracy']:.3f} ({timings['forecaster']:.0f} s)"
    )

    runs = budget.windows * budget.seeds
    echo(
        f"[3/{n}] evaluate    {budget.windows} test windows of {budget.window_days} days x "
        f"{budget.seeds} seeds: PPO ({budget.ppo_steps:,} steps a run) with and without "
        f"walk-forward LSTM forecasts in its observation ({2 * runs} agents), and 4 baselines, "
        f"each trained only on the days before its window ..."
    )
    with _Step(out, "evaluate", timings):
        ev = _step_evaluate(cfg, budget, out)
    w = ev["summary"]["windows"]
    echo(
        f"      windows {w[0]['first']}..{w[-1]['last']}; decisions after each close, fills "
        f"at the next open, {MARKET} costs; 95 % intervals ({timings['evaluate']:.0f} s)"
    )
    echo("")
    echo(ev["table"])
    echo("")
    for v in ev["verdicts"].values():
        echo(v)
    echo("")

    with _Step(out, "signal", timings):
        sig = _step_signal(cfg, budget, out, data)
    orders = ", ".join(
        f"{o['symbol']} target weight {o['target_weight']:.0%}"
        + (
            f" ({'buy' if o['shares'] > 0 else 'sell'} {abs(o['shares']):g} shares)"
            if o["shares"]
            else ""
        )
        for o in sig["orders"]
    )
    echo(
        f"[4/{n}] signal      the last window's agent (trained through "
        f"{sig['trained_through']}) after the close of {sig['date']}: {orders}, at the next open"
    )
    echo("")
    echo(f"outputs in {out}/")
    echo(
        f"  evaluation   {out / 'evaluate' / 'report.md'}  plots "
        f"{out / 'evaluate' / 'excess_by_window.png'} {out / 'evaluate' / 'equity.png'}"
    )
    echo(f"  runs         {out / 'evaluate' / 'runs'}/ (every agent's run dir and result)")
    echo(f"  forecaster   {out / 'forecaster'}/")
    echo(
        f"  more         stockgym evaluate {out / 'evaluate' / 'evaluate.toml'} --out "
        f"{out / 'more'} (edit windows, seeds, symbols)"
    )

    summary = {
        "format": "stockgym.quickstart.summary",
        "version": 2,
        "symbol": cfg.symbol,
        "budget": cfg.budget,
        "seed": cfg.seed,
        "data": d,
        "forecaster": fc,
        "evaluate": {
            "dir": str(out / "evaluate"),
            "policies": ev["summary"]["policies"],
            "windows": w,
            "n_trials": ev["summary"]["n_trials"],
        },
        "verdicts": ev["verdicts"],
        "signal": sig,
    }
    return json_ready(summary), ev["table"]
