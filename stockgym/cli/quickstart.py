"""``stockgym quickstart``: parse the flags, call :func:`stockgym.quickstart.run_quickstart`."""

from __future__ import annotations

import argparse
import sys

from stockgym.cli.common import DEFAULT_THREADS
from stockgym.core import UsageError
from stockgym.quickstart import (
    BUDGETS,
    QUICKSTART_EXAMPLES,
    QuickstartConfig,
    check_out,
    run_quickstart,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quickstart`` subcommand."""
    qs = subparsers.add_parser(
        "quickstart",
        help="the whole pipeline on the bundled sample, offline, in minutes",
        description="Data -> LSTM forecaster (+ walk-forward forecasts) -> PPO and DQN "
        "on the training period -> backtests on the held-out test period against "
        "buy-and-hold -> next-day signal; one output directory, one comparison table.",
        epilog=QUICKSTART_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from stockgym.data import sample_symbols

    qs.add_argument(
        "--symbol",
        default="AAPL",
        choices=sample_symbols(),
        help="bundled sample symbol (default AAPL)",
    )
    qs.add_argument(
        "--out",
        metavar="DIR",
        help="output directory, new or empty (default runs/quickstart-<time>)",
    )
    qs.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="default",
        help="compute budget: default (about 1.5 minutes on 2 CPU cores) or small "
        "(under a minute, for tests; the agents learn almost nothing)",
    )
    qs.add_argument(
        "--fast", dest="budget", action="store_const", const="small", help="same as --budget small"
    )
    qs.add_argument("--seed", type=int, default=0, help="seed of every step (default 0)")
    qs.add_argument(
        "--ppo-steps", type=int, help="PPO env steps per agent run (default: the budget's)"
    )
    qs.add_argument(
        "--workers", type=int, default=1, help="processes for the evaluation's runs (default 1)"
    )
    qs.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    qs.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}; see `stockgym train --help`)",
    )
    qs.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> None:
    """Handler of ``stockgym quickstart``."""
    cfg = QuickstartConfig(
        symbol=args.symbol,
        out=args.out or "",
        budget=args.budget,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        ppo_steps=args.ppo_steps,
        workers=args.workers,
    )
    try:
        cfg.validate()
        if args.out:
            check_out(args.out)
    except ValueError as exc:
        raise UsageError(f"quickstart: {exc}") from exc
    run_quickstart(cfg, echo=lambda line: print(line, flush=True))
    sys.stdout.flush()
