"""``stockgym backtest`` and ``stockgym compare`` (registered by :func:`register`).

Thin: parse and check the flags, load the data, call :func:`run_policy`, write the
output directory (atomically) and print the tables. Heavy imports happen in handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from stockgym.cli.common import (
    RULE_FLAGS,
    add_rule_flags,
    check_date,
    check_out,
    default_out,
    print_report,
)
from stockgym.core import UsageError

BACKTEST_EXAMPLES = """examples:
  stockgym backtest --strategy buy_and_hold --symbol AAPL --source sample --out runs/bh
  stockgym backtest --strategy sma_cross --fast 10 --slow 40 --symbol AAPL MSFT \\
      --source sample --start 2010-01-01 --end 2012-12-31 --market us --out runs/sma
  stockgym backtest --strategy equal_weight --symbol 005930 000660 --source fdr \\
      --start 2020-01-01 --market krx --benchmark KS11 --out runs/ew
  stockgym backtest --strategy sma_cross --symbol 005930 --source fdr --market krx \\
      --max-participation 0.025 --impact sqrt --out runs/krx  (KRX tax by date, limits, ticks)
  stockgym backtest --strategy random --seed 3 --symbol X Y --source synthetic --out runs/r3
  stockgym backtest --strategy forecast_sign --symbol AAPL --source sample \\
      --forecast forecasts.csv --out runs/fc          (CSV: date,forecast)
  stockgym backtest --strategy buy_and_hold --symbol AAPL --source sample --period test \\
      --market none --out runs/bh-test                (default 64/16/20 split; test part)

outputs in --out DIR: metrics.json, equity.csv, trades.csv, config.json, and (unless
--no-plots) equity.png, drawdown.png, trades.png and report.html (one self-contained
page; see docs/backtest.md). DIR must not exist or be empty (--force replaces it);
nothing is left behind if the run fails.
"""

COMPARE_EXAMPLES = """examples:
  stockgym compare runs/bh runs/sma
  stockgym compare runs/r1 runs/r2 runs/r3 --out runs/cmp   (mean ± std over the seeds)

Dirs whose config.json differs only in the seed form a group with a mean ± std column.
With --out DIR: compare.csv, compare.md, equity.png (all runs overlaid) and report.html
(one self-contained page) are written there; without it only the table is printed.
"""

# Flags that only apply to some strategies: flag dest -> (strategy, parameter name).
STRATEGY_FLAGS = {
    "fast": ("sma_cross", "fast"),
    "slow": ("sma_cross", "slow"),
    "rebalance": ("equal_weight", "rebalance"),
    "p_long": ("random", "p_long"),
    "forecast_column": ("forecast_sign", "column"),
    "threshold": ("forecast_sign", "threshold"),
    "forecast": ("forecast_sign", None),
}
PERIODS = ("all", "train", "valid", "test")


# ---------------------------------------------------------------- parser
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``backtest`` and ``compare`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    bt = subparsers.add_parser(
        "backtest",
        help="run a baseline strategy over a period; metrics, plots, files",
        description="Backtest a strategy through the trading env (next-open fills, real "
        "costs) against buy-and-hold, and write a report directory.",
        epilog=BACKTEST_EXAMPLES,
        formatter_class=fmt,
    )
    _add_backtest_args(bt)
    bt.set_defaults(func=cmd_backtest)
    cmp = subparsers.add_parser(
        "compare",
        help="one table (and plot) of several backtest output dirs",
        description="Compare backtest output dirs: all metrics in one table (terminal, "
        "Markdown, CSV), mean ± std over seeds, one overlaid equity plot.",
        epilog=COMPARE_EXAMPLES,
        formatter_class=fmt,
    )
    cmp.add_argument("dirs", nargs="+", metavar="DIR", help="backtest output dirs")
    cmp.add_argument(
        "--out",
        metavar="DIR",
        help="write compare.csv, compare.md, equity.png here (default: print only)",
    )
    cmp.add_argument("--force", action="store_true", help="replace a non-empty --out DIR")
    cmp.set_defaults(func=cmd_compare)


def _add_backtest_args(p: argparse.ArgumentParser) -> None:
    from stockgym.backtest.strategies import STRATEGIES

    g = p.add_argument_group("strategy")
    g.add_argument(
        "--strategy", metavar="NAME", help=f"one of: {', '.join(STRATEGIES)} (or --model)"
    )
    g.add_argument(
        "--model",
        metavar="RUN_DIR",
        help="backtest a trained agent (a `stockgym train` run dir) on its test "
        "period, with its env and costs (see `stockgym train --help`)",
    )
    g.add_argument(
        "--trust",
        action="store_true",
        help="load an unsigned stable-baselines3 model (its zip is unpickled and can run code): "
        "only for run dirs you trust",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of --strategy random and of --source synthetic (default 0)",
    )
    g.add_argument("--fast", type=int, help="sma_cross: fast SMA window in days (default 20)")
    g.add_argument("--slow", type=int, help="sma_cross: slow SMA window in days (default 50)")
    g.add_argument(
        "--rebalance",
        choices=["W", "M", "Q"],
        help="equal_weight: rebalance weekly, monthly (default) or quarterly",
    )
    g.add_argument(
        "--p-long", type=float, help="random: probability of long per asset and day (0.5)"
    )
    g.add_argument(
        "--forecast",
        metavar="FILE",
        help="forecast_sign: CSV of forecasts (date,forecast; or date,symbol,forecast), "
        "or a `stockgym forecast walk-forward` run dir (its forecasts.csv)",
    )
    g.add_argument(
        "--forecast-column",
        metavar="NAME",
        help="forecast_sign: the column to read (default 'forecast'; any env "
        "feature such as sma_ratio_20 works too)",
    )
    g.add_argument("--threshold", type=float, help="forecast_sign: long above this (default 0)")

    d = p.add_argument_group("data")
    d.add_argument(
        "--symbol",
        "--symbols",
        dest="symbols",
        nargs="+",
        action="extend",
        metavar="SYMBOL",
        help="symbol(s), or CSV path(s) for --source csv",
    )
    d.add_argument(
        "--source",
        default="auto",
        choices=["auto", "fdr", "csv", "sample", "synthetic"],
        help="where prices come from (default auto: cache, then finance-datareader)",
    )
    d.add_argument("--start", help="first decision date, YYYY-MM-DD (default: first possible)")
    d.add_argument("--end", help="last date, YYYY-MM-DD (default: last date of the data)")
    d.add_argument(
        "--period",
        choices=PERIODS,
        help="backtest one part of the default 64/16/20 train/valid/test split of "
        "the --start..--end data (default all; with --model: the run's split, "
        "default test)",
    )
    d.add_argument("--raw", action="store_true", help="raw prices (no split/dividend adjustment)")
    d.add_argument("--cache-dir", help="download cache (default $STOCKGYM_CACHE_DIR or user cache)")

    c = p.add_argument_group("costs and execution")
    c.add_argument(
        "--market",
        default="auto",
        choices=["auto", "krx", "us", "none"],
        help="cost preset (default auto: krx for 6-digit codes, else us)",
    )
    c.add_argument(
        "--commission", type=float, help="commission rate, both sides (0.00015 = 0.015%%)"
    )
    c.add_argument("--sell-tax", type=float, help="sell-side tax rate")
    c.add_argument("--slippage-bps", type=float, help="slippage in basis points")
    c.add_argument("--min-commission", type=float, help="minimum commission per order (currency)")
    add_rule_flags(c)
    c.add_argument(
        "--initial-cash",
        type=float,
        default=10_000_000.0,
        help="starting cash (default 10,000,000)",
    )
    c.add_argument(
        "--fill",
        choices=["open", "close"],
        default="open",
        help="fill at the next open (default) or at the decision close (optimistic)",
    )
    c.add_argument("--fractional", action="store_true", help="fractional shares")
    c.add_argument(
        "--window-size",
        type=int,
        default=30,
        help="observation window of the env (default 30, as for agents)",
    )

    o = p.add_argument_group("benchmark and output")
    o.add_argument(
        "--benchmark",
        metavar="SYMBOL",
        help="buy-and-hold of this symbol instead of the traded symbols",
    )
    o.add_argument(
        "--benchmark-source",
        choices=["auto", "fdr", "csv", "sample", "synthetic"],
        help="source of --benchmark (default: --source)",
    )
    o.add_argument(
        "--risk-free",
        type=float,
        default=0.0,
        help="annual risk-free rate for Sharpe/Sortino (default 0)",
    )
    o.add_argument(
        "--out",
        metavar="DIR",
        help="output dir (default runs/backtest-STRATEGY-SYMBOLS); must be new or empty",
    )
    o.add_argument("--force", action="store_true", help="replace a non-empty --out DIR")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


# ---------------------------------------------------------------- checks
def _check_strategy(args: argparse.Namespace):
    from stockgym.backtest.strategies import STRATEGIES, make_strategy

    name = args.strategy
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"--strategy: unknown strategy {name!r}{hint}; choose one of {', '.join(STRATEGIES)}"
        )
    params: dict[str, Any] = {"seed": args.seed} if name == "random" else {}
    for dest, (owner, param) in STRATEGY_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if owner != name:
            flag = "--" + dest.replace("_", "-")
            raise UsageError(f"{flag} only applies to --strategy {owner}, not {name}")
        if param is not None:
            params[param] = value
    try:
        return make_strategy(name, **params)
    except ValueError as exc:
        raise UsageError(f"--strategy {name}: {exc}") from exc


def _check_numbers(args: argparse.Namespace) -> None:
    for flag in ("commission", "sell_tax", "slippage_bps", "min_commission"):
        v = getattr(args, flag)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise UsageError(f"--{flag.replace('_', '-')} must be a number >= 0, got {v}")
    for flag, v, ok in (
        ("--commission", args.commission, lambda x: x < 1),
        ("--sell-tax", args.sell_tax, lambda x: x < 1),
    ):
        if v is not None and not ok(v):
            raise UsageError(f"{flag} is a rate (0.001 = 0.1%), got {v}")
    if not (math.isfinite(args.initial_cash) and args.initial_cash > 0):
        raise UsageError(f"--initial-cash must be > 0, got {args.initial_cash}")
    if args.window_size < 1:
        raise UsageError(f"--window-size must be >= 1, got {args.window_size}")
    if not (math.isfinite(args.risk_free) and args.risk_free > -1):
        raise UsageError(f"--risk-free is an annual rate (0.03 = 3%), got {args.risk_free}")


# ---------------------------------------------------------------- backtest
def cmd_backtest(args: argparse.Namespace) -> None:
    """Handler of ``stockgym backtest``."""
    from stockgym.backtest.report import atomic_dir, write_backtest
    from stockgym.backtest.strategy_run import BacktestSpec, backtest_strategy

    if args.model is not None:  # a trained agent: the run's own env and costs
        from stockgym.cli.train import backtest_model

        return backtest_model(args)
    if args.trust:
        raise UsageError("--trust applies to --model only (loading a trained agent)")
    if args.strategy is None or not args.symbols:
        raise UsageError("give --strategy NAME and --symbol SYMBOL (or --model RUN_DIR)")
    args.period = args.period or "all"
    strategy = _check_strategy(args)
    start = check_date("--start", args.start)
    end = check_date("--end", args.end)
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--start {args.start} must be before --end {args.end}")
    _check_numbers(args)
    if (
        strategy.name == "forecast_sign"
        and args.forecast is None
        and (args.forecast_column in (None, "forecast"))
    ):
        raise UsageError(
            "--strategy forecast_sign needs --forecast FILE (a CSV with date,forecast), or "
            "--forecast-column naming an env feature (e.g. sma_ratio_20)"
        )
    out = Path(args.out) if args.out else default_out(strategy.name, args.symbols)
    check_out(out, args.force)
    names = {f.name for f in dataclasses.fields(BacktestSpec)} - {"start", "end"}
    spec = BacktestSpec(start=start, end=end, **{k: getattr(args, k) for k in names})
    result, config = backtest_strategy(
        spec, strategy, out=out, command=_command(args, out), progress=True
    )
    if config["backtest"]["note"]:
        print(config["backtest"]["note"])
    with atomic_dir(out, args.force) as tmp:
        metrics = write_backtest(
            result, tmp, config, risk_free=args.risk_free, plots=not args.no_plots
        )
    print_report(config, metrics, out)


def _command(args, out: Path) -> str:
    """The command line that re-runs this backtest (every flag that was given)."""
    skip = {"func", "command", "force", "symbols", "out"}
    parts = ["stockgym", "backtest", "--symbol", *args.symbols]
    for key, value in sorted(vars(args).items()):
        flag = "--" + key.replace("_", "-")
        if key in RULE_FLAGS and isinstance(value, bool):  # --price-limit / --ticks on|off
            parts += [flag, "on" if value else "off"]
            continue
        if key in skip or key.startswith("_") or value is None or value is False:
            continue
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join([*parts, "--out", str(out)])


# ---------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> None:
    """Handler of ``stockgym compare``."""
    from stockgym.backtest.compare import (
        COMPARE_FILES,
        compare_frame,
        load_runs,
        text_table,
        write_compare,
    )
    from stockgym.backtest.report import atomic_dir

    if args.out:
        check_out(args.out, args.force)
    try:
        runs = load_runs(args.dirs)
    except ValueError as exc:
        raise UsageError(f"compare: {exc}") from exc
    frame = compare_frame(runs)
    print(text_table(frame))
    if args.out:
        with atomic_dir(args.out, args.force) as tmp:
            write_compare(runs, tmp)
        print(f"\nwrote {args.out}/ ({' '.join(COMPARE_FILES)})")
    else:
        print(
            "\n(add --out DIR to write compare.csv, compare.md, an overlaid equity plot "
            "and report.html)",
            file=sys.stderr,
        )
