"""``stockgym evaluate``: parse the flags, call :func:`stockgym.experiment.evaluate.evaluate`,
print the table and the verdicts."""

from __future__ import annotations

import argparse

from stockgym.cli.common import DEFAULT_THREADS
from stockgym.core import UsageError

EXAMPLES = """examples:
  stockgym evaluate evaluate.toml --out runs/eval
  stockgym evaluate evaluate.toml --out runs/eval --workers 2      (two processes)
  stockgym evaluate evaluate.toml --out runs/eval --resume         (skip finished runs)

evaluate.toml:
  [evaluate]
  windows = 5              # consecutive test windows at the end of the data
  window_days = 252        # rows per test window
  seeds = [0, 1, 2]
  symbols = ["AAPL", "MSFT"]
  baselines = ["buy_and_hold", "sma_cross", "forecast_sign", "random"]
  ablate_forecasts = true  # also train the agent without forecast features
  [train]                  # a `stockgym train --config` file's content
  algo = "ppo"
  total_timesteps = 100000
  [train.data]
  source = "sample"
  [train.env.forecasts]
  model = "lstm"

DIR gets summary.json, results.csv, report.md, excess_by_window.png, equity.png and
runs/ (one folder per symbol x window x policy x seed). See docs/evaluate.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="agent vs buy-and-hold and baselines over windows x seeds x symbols, with CIs",
        description="Rolling-origin evaluation: train on the data before each test window, "
        "backtest once on it, and say with an interval whether the agent beats "
        "buy-and-hold out of sample.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG.toml", help="[evaluate] and [train] tables")
    p.add_argument("--out", required=True, metavar="DIR", help="output dir (new or empty)")
    p.add_argument("--workers", type=int, default=1, help="processes running jobs (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch threads per worker (default {DEFAULT_THREADS})",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="run the jobs as Ray tasks on this cluster ('local': a local Ray; "
        "needs the [ray] extra) instead of --workers processes",
    )
    p.add_argument("--resume", action="store_true", help="keep finished runs in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from stockgym.experiment.config import read_toml
    from stockgym.experiment.evaluate import EvaluateConfig, evaluate
    from stockgym.experiment.evaluate_report import sentence, table

    runner = None
    if args.address:
        from functools import partial

        from stockgym.sweep.runner import ray_map

        address = None if args.address == "local" else args.address
        runner = partial(_on_ray, ray_map, work_dir=args.out, address=address)
    try:
        config = EvaluateConfig.from_dict(read_toml(args.config))
        summary = evaluate(
            config,
            args.out,
            workers=args.workers,
            threads=args.threads,
            resume=args.resume,
            progress=not args.no_progress,
            runner=runner,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"evaluate: {exc}") from exc
    print(table(summary))
    print()
    for name, s in summary["policies"].items():
        print(sentence(name, s, summary))
    print(
        f"\nwrote {args.out}/ (summary.json results.csv report.md excess_by_window.png "
        "equity.png runs/)"
    )


def _on_ray(ray_map, fn, jobs, *, work_dir, address):  # noqa: ANN001 - a runner adapter
    return ray_map(fn, jobs, work_dir, address=address)
