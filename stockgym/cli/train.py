"""``stockgym train`` and ``stockgym signal`` (registered by :func:`register`), and the
handler of ``stockgym backtest --model RUN_DIR`` (:func:`backtest_model`).

Thin: parse and check the flags, call :mod:`stockgym.experiment`, print. Heavy imports
(torch) happen in the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from stockgym.cli.common import (
    DEFAULT_THREADS,
    RULE_FLAGS,
    add_rule_flags,
    check_date,
    check_out,
    print_report,
)
from stockgym.core import UsageError

TRAIN_EXAMPLES = """examples:
  stockgym train --algo ppo --symbol AAPL --source sample --total-timesteps 200000
  stockgym train --algo dqn --symbol 005930 --source fdr --start 2015-01-01 --backbone lstm
  stockgym train --algo ppo --symbol X --source synthetic --set data.options.kind=\\"edge\\" \\
      --set data.options.edge=0.3 --window-size 10 --run-dir runs/ppo-edge
  stockgym train --config experiment.toml --seed 3            (flags override the file)
  stockgym train --algo ppo --symbol 005930 --source fdr --max-participation 0.025 \\
      --total-timesteps 2000000 --compile-env         (KRX rules, volume cap, compiled env)
  stockgym train --algo ppo --symbol AAPL --source sample --backbone lstm \\
      --precision bfloat16                          (autocast: ~2x for cnn / lstm)
  stockgym train --algo sb3-ppo --symbol AAPL --source sample --backbone lstm \\
      --set agent.n_steps=128 --set agent.ent_coef=0.01      (stable-baselines3's PPO)
  stockgym train --algo ppo --symbol AAPL --source sample --forecasts lstm \\
      --set env.forecasts.horizon=[1,5]                       (forecast features)
  stockgym train --resume runs/agents/20260101-120000-ppo-AAPL  (after a crash or a kill)
  stockgym train --algo ppo --symbol AAPL --source sample \\
      --pretrained runs/forecast/lstm-aapl                   (start from a forecaster)

The run dir (default runs/agents/<time>-<algo>-<symbols>) holds config.json, config.toml
(re-run with --config), scaler.json, tensorboard/ (tensorboard --logdir runs), model/
and summary.json, and checkpoint.pt (every --checkpoint-freq steps, written atomically:
--resume RUN_DIR continues from it). Then: stockgym backtest --model RUN_DIR (the test
period).
"""

SIGNAL_EXAMPLES = """examples:
  stockgym signal --model runs/agents/20260101-120000-ppo-AAPL
  stockgym signal --model RUN_DIR --cash 5000000 --shares 10      (current holdings)
  stockgym signal --model RUN_DIR --json

The observation is built from data through the latest bar the source has (the run's
symbols and source; --source/--cache-dir to change where it comes from). The action is
the agent's deterministic choice for the next trading day: orders fill at the next open.
"""


# ---------------------------------------------------------------- parser
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``signal`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    tr = subparsers.add_parser(
        "train",
        help="train a DQN / PPO / REINFORCE / A2C / Q-learning agent into a run dir",
        description="Train an agent on the training period (validation backtests while it "
        "learns; the test period is left for `stockgym backtest --model`).",
        epilog=TRAIN_EXAMPLES,
        formatter_class=fmt,
    )
    tr.add_argument("--config", metavar="FILE", help="TOML config (flags override it)")
    tr.add_argument(
        "--algo",
        choices=["dqn", "ppo", "reinforce", "a2c", "qlearning", "sb3-ppo", "sb3-dqn", "sb3-a2c"],
        help="algorithm (default ppo; sb3-*: stable-baselines3, needs the [sb3] extra)",
    )
    tr.add_argument(
        "--symbol",
        "--symbols",
        dest="symbols",
        nargs="+",
        metavar="SYMBOL",
        help="symbol(s) to trade (or CSV paths for --source csv)",
    )
    tr.add_argument(
        "--source",
        choices=["auto", "fdr", "csv", "sample", "synthetic"],
        help="where prices come from (default auto)",
    )
    tr.add_argument("--start", help="first date of data to load (YYYY-MM-DD)")
    tr.add_argument("--end", help="last date of data to load")
    tr.add_argument(
        "--backbone",
        choices=["mlp", "cnn", "lstm", "gru", "tcn", "transformer"],
        help="network body (default mlp)",
    )
    tr.add_argument(
        "--pretrained",
        metavar="DIR",
        help="forecaster checkpoint / run dir whose encoder starts the backbone",
    )
    tr.add_argument(
        "--freeze-pretrained",
        action="store_true",
        default=None,
        help="keep the pretrained encoder's weights fixed",
    )
    tr.add_argument(
        "--forecasts",
        metavar="MODEL",
        help="add walk-forward forecasts of this forecaster (mlp, cnn, lstm...) to "
        "the observation ([env.forecasts] in --config sets the rest)",
    )
    tr.add_argument("--total-timesteps", type=int, help="env steps to train (all envs counted)")
    tr.add_argument(
        "--num-envs",
        type=int,
        help="training envs stepped together (default: ppo 64, dqn 32, a2c 16, reinforce 8, "
        "qlearning 8, sb3-* 8)",
    )
    tr.add_argument("--window-size", type=int, help="observation window (default 30)")
    tr.add_argument(
        "--episode-length", type=int, help="training episode length in bars (default 100)"
    )
    tr.add_argument("--market", choices=["auto", "krx", "us", "none"], help="cost preset")
    add_rule_flags(tr)
    tr.add_argument(
        "--compile-env",
        action="store_true",
        default=None,
        help="compile the training env's step with torch.compile (a one-off compile of "
        "about 12 s on 2 cores, ~4 s with a warm compile cache; pays off for runs of about "
        "a million steps and more)",
    )
    tr.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        help="ppo, a2c, reinforce: bfloat16 runs the networks under torch.autocast (about "
        "2x for cnn / lstm on CPUs with bfloat16 units; default float32)",
    )
    tr.add_argument("--eval-freq", type=int, help="env steps between validation backtests")
    tr.add_argument(
        "--checkpoint-freq", type=int, help="env steps between checkpoints (default 20000; 0: none)"
    )
    tr.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (no other "
        "config flags: the run's own config is used)",
    )
    tr.add_argument("--seed", type=int, help="seed (default 0)")
    tr.add_argument("--device", help="auto (default), cpu, cuda")
    tr.add_argument("--run-dir", metavar="DIR", help="output dir (new or empty)")
    tr.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, TOML value: --set agent.learning_rate=1e-3 "
        "--set env.fractional=true --set data.options.edge=0.3 (repeatable)",
    )
    tr.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"torch CPU threads while training (default {DEFAULT_THREADS}: torch's "
        "own default, one per core, collapses on a busy machine)",
    )
    tr.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (a bar on a terminal, a log line every 10 %% otherwise)",
    )
    tr.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events")
    tr.set_defaults(func=cmd_train)

    sg = subparsers.add_parser(
        "signal",
        help="the trained agent's action for the next trading day",
        description="Load a `stockgym train` run, observe the latest bar and print the "
        "action, its target weights and the orders they imply.",
        epilog=SIGNAL_EXAMPLES,
        formatter_class=fmt,
    )
    sg.add_argument("--model", required=True, metavar="RUN_DIR", help="a `stockgym train` run dir")
    sg.add_argument(
        "--symbol",
        "--symbols",
        dest="symbols",
        nargs="+",
        metavar="SYMBOL",
        help="the run's symbol(s) (default; other symbols must match the model's count)",
    )
    sg.add_argument(
        "--source",
        choices=["auto", "fdr", "csv", "sample", "synthetic"],
        help="data source (default: the run's)",
    )
    sg.add_argument(
        "--cache-dir", help="download cache (default $STOCKGYM_CACHE_DIR or user cache)"
    )
    sg.add_argument("--cash", type=float, help="cash now (default: the run's initial cash)")
    sg.add_argument(
        "--shares",
        type=float,
        nargs="+",
        metavar="N",
        help="shares held now, one per symbol (default none)",
    )
    sg.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    sg.add_argument(
        "--trust",
        action="store_true",
        help="load an unsigned stable-baselines3 model (its zip is unpickled and can run code): "
        "only for run dirs you trust",
    )
    sg.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sg.set_defaults(func=cmd_signal)


# ---------------------------------------------------------------- train
_FLAG_KEYS = {
    "algo": "algo",
    "total_timesteps": "total_timesteps",
    "seed": "seed",
    "device": "device",
    "eval_freq": "eval_freq",
    "checkpoint_freq": "checkpoint_freq",
    "run_dir": "run_dir",
    "symbols": "data.symbols",
    "source": "data.source",
    "start": "data.start",
    "end": "data.end",
    "num_envs": "env.num_envs",
    "window_size": "env.window_size",
    "episode_length": "env.episode_length",
    "market": "env.market",
    "backbone": "agent.backbone",
    "pretrained": "agent.pretrained",
    "freeze_pretrained": "agent.freeze_pretrained",
    "threads": "agent.threads",
    "forecasts": "env.forecasts.model",
    **{flag: f"env.{flag}" for flag in RULE_FLAGS},
    "compile_env": "env.compile",
    "precision": "agent.precision",
}


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~stockgym.experiment.TrainConfig` of ``stockgym train``'s flags:
    the TOML file, then ``--set`` keys, then the named flags."""
    from stockgym.experiment.config import TrainConfig, parse_value, read_toml, set_key

    tree: dict[str, Any] = read_toml(args.config) if args.config else {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE (e.g. agent.learning_rate=1e-3), got {item!r}")
        set_key(tree, key.strip(), parse_value(value.strip()))
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            set_key(tree, key, value)
    tree.setdefault("progress", not args.no_progress)
    if isinstance(tree.setdefault("agent", {}), dict):
        tree["agent"].setdefault("threads", DEFAULT_THREADS)
    if args.no_tensorboard:
        tree["tensorboard"] = False
    try:
        config = TrainConfig.from_dict(tree)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"train: {exc}") from exc
    return config


def cmd_train(args: argparse.Namespace) -> None:
    """Handler of ``stockgym train``."""
    from stockgym.experiment import resume, train
    from stockgym.experiment.train import format_summary

    if args.resume:
        given = [
            f"--{d.replace('_', '-')}"
            for d in (*_FLAG_KEYS, "config")
            if getattr(args, d) is not None
        ] + (["--set"] if args.sets else [])
        if given:
            raise UsageError(f"--resume continues the run's own config; drop {', '.join(given)}")
        try:
            result = resume(args.resume, progress=not args.no_progress, echo=print)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"train --resume: {exc}") from exc
    else:
        result = train(build_config(args))
    print(format_summary(result))


# ---------------------------------------------------------------- backtest --model
def backtest_model(args: argparse.Namespace) -> None:
    """``stockgym backtest --model RUN_DIR``: :func:`stockgym.experiment.backtest_run` on
    the run's test period (``--period`` another part, or ``all``; ``--start`` / ``--end``
    dates), with the run's env (costs, features, scaler); the same output files and
    report as a strategy backtest."""
    from stockgym.backtest.report import atomic_dir, write_backtest
    from stockgym.experiment import backtest_run, read_record

    for flag in (
        "strategy",
        "forecast",
        "benchmark",
        "commission",
        "sell_tax",
        "slippage_bps",
        "min_commission",
        *RULE_FLAGS,
        "fast",
        "slow",
        "rebalance",
        "p_long",
        "forecast_column",
        "threshold",
    ):
        if getattr(args, flag, None) is not None:
            raise UsageError(
                f"--{flag.replace('_', '-')} does not apply with --model (the "
                "run's env, costs and policy are used)"
            )
    start = check_date("--start", args.start)
    end = check_date("--end", args.end)
    try:
        read_record(args.model)  # a clear error before anything else
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--model: {exc}") from exc
    out = (
        Path(args.out) if args.out else Path("runs") / f"backtest-{Path(args.model).resolve().name}"
    )
    check_out(out, args.force)
    try:
        bt = backtest_run(
            args.model,
            args.period,
            start=start,
            end=end,
            symbols=args.symbols,
            source=args.source,
            cache_dir=args.cache_dir,
            progress=True,
            trust=args.trust,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--model: {exc}") from exc
    config = bt.report_config(out, risk_free=args.risk_free)
    with atomic_dir(out, args.force) as tmp:
        metrics = write_backtest(
            bt.result, tmp, config, risk_free=args.risk_free, plots=not args.no_plots
        )
    if bt.period_name != "test":
        test = bt.record["splits"]["test"]
        print(
            f"note: backtesting the {bt.period_name} period (the run's test period is "
            f"{test['first']} .. {test['last']})"
        )
    print_report(config, metrics, out)


# ---------------------------------------------------------------- signal
def cmd_signal(args: argparse.Namespace) -> None:
    """Handler of ``stockgym signal``."""
    from stockgym.agents.signals import next_signal
    from stockgym.experiment.evaluation import fitted_env, run_data
    from stockgym.experiment.records import load_data, load_run

    if args.shares is not None and not all(math.isfinite(q) for q in args.shares):
        raise UsageError(
            "--shares must be finite numbers of shares (one per symbol), got "
            + " ".join(f"{q:g}" for q in args.shares)
        )
    try:
        record, agent = load_run(args.model, device=args.device, trust=args.trust)
        spec = run_data(record, args.symbols, args.source, args.cache_dir, end=None)
        prices = load_data(spec)
        env = fitted_env(args.model, record, prices, agent)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--model: {exc}") from exc
    if args.shares is not None and len(args.shares) != len(env.symbols):
        raise UsageError(
            f"--shares needs one number per symbol ({len(env.symbols)}: "
            f"{' '.join(env.symbols)}), got {len(args.shares)}"
        )
    if args.cash is not None and not (math.isfinite(args.cash) and args.cash >= 0):
        raise UsageError(f"--cash must be a number >= 0, got {args.cash}")
    sig = next_signal(agent, env, cash=args.cash, shares=args.shares)
    if args.json:
        json.dump(sig, sys.stdout, indent=2)
        print()
        return
    print(
        f"signal     {record['config']['algo'].upper()} agent {args.model} [source={spec.source}]"
    )
    print(f"as of      close of {sig['date']} (latest bar); orders fill at the next open")
    print(f"portfolio  value {sig['portfolio_value']:,.2f} = cash {sig['cash']:,.2f} + positions")
    print(f"action     {sig['action']}")
    print(f"{'symbol':<10}{'close':>12}{'weight now':>12}{'target':>10}{'order':>14}")
    for o in sig["orders"]:
        side = "hold" if o["shares"] == 0 else ("buy" if o["shares"] > 0 else "sell")
        qty = f"{side} {abs(o['shares']):g}" if o["shares"] else side
        print(
            f"{o['symbol']:<10}{o['close']:>12,.2f}{o['weight_now']:>12.2%}"
            f"{o['target_weight']:>10.2%}{qty:>14}"
        )
    print("(share counts are sized at the latest close; the env sizes them at the fill price)")
