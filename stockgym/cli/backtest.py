"""``stockgym backtest`` and ``stockgym compare`` (registered by :func:`register`).

Thin: parse and check the flags, load the data, call :func:`run_policy`, write the
output directory (atomically) and print the tables. Heavy imports happen in handlers.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import math
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from stockgym.core import UsageError

BACKTEST_EXAMPLES = """examples:
  stockgym backtest --strategy buy_and_hold --symbol AAPL --source sample --out runs/bh
  stockgym backtest --strategy sma_cross --fast 10 --slow 40 --symbol AAPL MSFT \\
      --source sample --start 2010-01-01 --end 2012-12-31 --market us --out runs/sma
  stockgym backtest --strategy equal_weight --symbol 005930 000660 --source fdr \\
      --start 2020-01-01 --market krx --benchmark KS11 --out runs/ew
  stockgym backtest --strategy random --seed 3 --symbol X Y --source synthetic --out runs/r3
  stockgym backtest --strategy forecast_sign --symbol AAPL --source sample \\
      --forecast forecasts.csv --out runs/fc          (CSV: date,forecast)
  stockgym backtest --strategy buy_and_hold --symbol AAPL --source sample --period test \\
      --market none --out runs/bh-test                (default 64/16/20 split; test part)

outputs in --out DIR: metrics.json, equity.csv, trades.csv, config.json, equity.png,
drawdown.png, trades.png (see docs/backtest.md). DIR must not exist or be empty
(--force replaces it); nothing is left behind if the run fails.
"""

COMPARE_EXAMPLES = """examples:
  stockgym compare runs/bh runs/sma
  stockgym compare runs/r1 runs/r2 runs/r3 --out runs/cmp   (mean ± std over the seeds)

Dirs whose config.json differs only in the seed form a group with a mean ± std column.
With --out DIR: compare.csv, compare.md and equity.png (all runs overlaid) are written
there; without it only the table is printed.
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
        "backtest", help="run a baseline strategy over a period; metrics, plots, files",
        description="Backtest a strategy through the trading env (next-open fills, real "
        "costs) against buy-and-hold, and write a report directory.",
        epilog=BACKTEST_EXAMPLES, formatter_class=fmt,
    )
    _add_backtest_args(bt)
    bt.set_defaults(func=cmd_backtest)
    cmp = subparsers.add_parser(
        "compare", help="one table (and plot) of several backtest output dirs",
        description="Compare backtest output dirs: all metrics in one table (terminal, "
        "Markdown, CSV), mean ± std over seeds, one overlaid equity plot.",
        epilog=COMPARE_EXAMPLES, formatter_class=fmt,
    )
    cmp.add_argument("dirs", nargs="+", metavar="DIR", help="backtest output dirs")
    cmp.add_argument("--out", metavar="DIR",
                     help="write compare.csv, compare.md, equity.png here (default: print only)")
    cmp.add_argument("--force", action="store_true", help="replace a non-empty --out DIR")
    cmp.set_defaults(func=cmd_compare)


def _add_backtest_args(p: argparse.ArgumentParser) -> None:
    from stockgym.backtest.strategies import STRATEGIES

    g = p.add_argument_group("strategy")
    g.add_argument("--strategy", metavar="NAME",
                   help=f"one of: {', '.join(STRATEGIES)} (or --model)")
    g.add_argument("--model", metavar="RUN_DIR",
                   help="backtest a trained agent (a `stockgym train` run dir) on its test "
                   "period, with its env and costs (see `stockgym train --help`)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of --strategy random and of --source synthetic (default 0)")
    g.add_argument("--fast", type=int, help="sma_cross: fast SMA window in days (default 20)")
    g.add_argument("--slow", type=int, help="sma_cross: slow SMA window in days (default 50)")
    g.add_argument("--rebalance", choices=["W", "M", "Q"],
                   help="equal_weight: rebalance weekly, monthly (default) or quarterly")
    g.add_argument("--p-long", type=float, help="random: probability of long per asset and day (0.5)")
    g.add_argument("--forecast", metavar="FILE",
                   help="forecast_sign: CSV of forecasts (date,forecast; or date,symbol,forecast), "
                   "or a `stockgym forecast walk-forward` run dir (its forecasts.csv)")
    g.add_argument("--forecast-column", metavar="NAME",
                   help="forecast_sign: the column to read (default 'forecast'; any env "
                   "feature such as sma_ratio_20 works too)")
    g.add_argument("--threshold", type=float, help="forecast_sign: long above this (default 0)")

    d = p.add_argument_group("data")
    d.add_argument("--symbol", "--symbols", dest="symbols", nargs="+", action="extend",
                   metavar="SYMBOL", help="symbol(s), or CSV path(s) for --source csv")
    d.add_argument("--source", default="auto",
                   choices=["auto", "fdr", "csv", "sample", "synthetic"],
                   help="where prices come from (default auto: cache, then finance-datareader)")
    d.add_argument("--start", help="first decision date, YYYY-MM-DD (default: first possible)")
    d.add_argument("--end", help="last date, YYYY-MM-DD (default: last date of the data)")
    d.add_argument("--period", choices=PERIODS,
                   help="backtest one part of the default 64/16/20 train/valid/test split of "
                   "the --start..--end data (default all; with --model: the run's split, "
                   "default test)")
    d.add_argument("--raw", action="store_true", help="raw prices (no split/dividend adjustment)")
    d.add_argument("--cache-dir", help="download cache (default $STOCKGYM_CACHE_DIR or user cache)")

    c = p.add_argument_group("costs and execution")
    c.add_argument("--market", default="auto", choices=["auto", "krx", "us", "none"],
                   help="cost preset (default auto: krx for 6-digit codes, else us)")
    c.add_argument("--commission", type=float, help="commission rate, both sides (0.00015 = 0.015%%)")
    c.add_argument("--sell-tax", type=float, help="sell-side tax rate")
    c.add_argument("--slippage-bps", type=float, help="slippage in basis points")
    c.add_argument("--min-commission", type=float, help="minimum commission per order (currency)")
    c.add_argument("--initial-cash", type=float, default=10_000_000.0,
                   help="starting cash (default 10,000,000)")
    c.add_argument("--fill", choices=["open", "close"], default="open",
                   help="fill at the next open (default) or at the decision close (optimistic)")
    c.add_argument("--fractional", action="store_true", help="fractional shares")
    c.add_argument("--window-size", type=int, default=30,
                   help="observation window of the env (default 30, as for agents)")

    o = p.add_argument_group("benchmark and output")
    o.add_argument("--benchmark", metavar="SYMBOL",
                   help="buy-and-hold of this symbol instead of the traded symbols")
    o.add_argument("--benchmark-source", choices=["auto", "fdr", "csv", "sample", "synthetic"],
                   help="source of --benchmark (default: --source)")
    o.add_argument("--risk-free", type=float, default=0.0,
                   help="annual risk-free rate for Sharpe/Sortino (default 0)")
    o.add_argument("--out", metavar="DIR",
                   help="output dir (default runs/backtest-STRATEGY-SYMBOLS); must be new or empty")
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


def _check_date(flag: str, value: str | None):
    import pandas as pd

    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{flag}: {value!r} is not a date; use YYYY-MM-DD") from exc


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


# ---------------------------------------------------------------- data
def _lookback_days(window: int, strategy_lookback: int) -> int:
    """Calendar days to load before --start: feature warm-up, the observation window and
    the strategy's history, with room for weekends and holidays."""
    rows = 25 + window + strategy_lookback
    return int(rows * 1.6) + 20


def _load(symbols: list[str], source: str, start, end, args, seed_opts: dict):
    from stockgym.data import load_prices

    opts: dict[str, Any] = dict(seed_opts) if source == "synthetic" else {}
    if source in ("auto", "fdr"):
        opts["cache_dir"] = args.cache_dir
    target = symbols[0] if len(symbols) == 1 else list(symbols)
    prices = load_prices(target, start, end, source=source, adjust=not args.raw, **opts)
    if source == "csv":  # name CSV symbols by file stem, not path
        names = [Path(s).stem for s in symbols]
        if len(symbols) == 1:
            prices.attrs["symbols"] = names
        else:
            prices = prices.rename(columns=dict(zip(symbols, names, strict=True)), level=0)
    return prices


def _forecast_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir() and (p / "forecasts.csv").is_file():  # a `stockgym forecast walk-forward` run
        p = p / "forecasts.csv"
    if not p.is_file():
        raise UsageError(f"--forecast: file not found: {p}")
    return p


def _read_forecast(path: str, column: str, symbols: list[str]):
    import pandas as pd

    p = _forecast_file(path)
    try:
        raw = pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--forecast: cannot read {p}: {exc}") from exc
    cols = {c.lower(): c for c in raw.columns}
    if "date" not in cols or column not in raw.columns:
        raise UsageError(
            f"--forecast: {p} needs columns 'date' and {column!r} (and 'symbol' for several "
            f"symbols); it has {list(raw.columns)}"
        )
    try:
        raw["date"] = pd.to_datetime(raw[cols["date"]])
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--forecast: {p} has a 'date' that is not a date: {exc}") from exc
    if len(symbols) == 1 and "symbol" not in cols:
        return raw.set_index("date")[[column]].astype("float64")
    if "symbol" not in cols:
        raise UsageError(f"--forecast: {p} needs a 'symbol' column for several symbols")
    wide = raw.pivot(index="date", columns=cols["symbol"], values=column).astype("float64")
    missing = [s for s in symbols if s not in wide.columns]
    if missing:
        raise UsageError(f"--forecast: {p} has no rows for symbol(s) {missing}")
    return pd.concat({s: wide[[s]].set_axis([column], axis=1) for s in symbols}, axis=1)


def _data_hash(prices) -> str:
    import pandas as pd

    h = hashlib.sha256(pd.util.hash_pandas_object(prices, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- backtest
def cmd_backtest(args: argparse.Namespace) -> None:
    """Handler of ``stockgym backtest``."""
    from stockgym.backtest.report import OutputDirError, check_out_dir

    if args.model is not None:  # a trained agent: stockgym.agents builds its env
        from stockgym.agents.cli import backtest_model

        return backtest_model(args)
    if args.strategy is None or not args.symbols:
        raise UsageError("give --strategy NAME and --symbol SYMBOL (or --model RUN_DIR)")
    args.period = args.period or "all"
    strategy = _check_strategy(args)
    start = _check_date("--start", args.start)
    end = _check_date("--end", args.end)
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--start {args.start} must be before --end {args.end}")
    _check_numbers(args)
    if strategy.name == "forecast_sign" and args.forecast is None and (
            args.forecast_column in (None, "forecast")):
        raise UsageError(
            "--strategy forecast_sign needs --forecast FILE (a CSV with date,forecast), or "
            "--forecast-column naming an env feature (e.g. sma_ratio_20)"
        )
    out = Path(args.out) if args.out else _default_out(strategy.name, args.symbols)
    try:
        check_out_dir(out, args.force)
    except OutputDirError as exc:
        raise UsageError(str(exc)) from exc
    run = _prepare(args, strategy, start, end)
    _execute(args, strategy, run, out)


def _default_out(strategy: str, symbols: list[str]) -> Path:
    syms = "-".join(Path(s).stem for s in symbols)[:60]
    return Path("runs") / f"backtest-{strategy}-{syms}"


def _prepare(args, strategy, start, end) -> dict[str, Any]:
    """Load data, build the env keywords and resolve the period."""
    import pandas as pd

    from stockgym.data import split

    seed_opts = {"seed": args.seed}
    load_start = None
    if start is not None and args.period == "all":
        load_start = start - pd.Timedelta(days=_lookback_days(args.window_size, strategy.lookback))
    prices = _load(args.symbols, args.source, load_start, end, args, seed_opts)
    period_start, period_end, splits = start, end, None
    if args.period != "all":
        parts = split(prices)
        splits = parts.dates
        period_start = pd.Timestamp(splits[args.period]["first"])
        period_end = pd.Timestamp(splits[args.period]["last"])
    names = _symbol_names(prices)
    extra = None
    column = args.forecast_column or ("forecast" if strategy.name == "forecast_sign" else None)
    if args.forecast:
        extra = _read_forecast(args.forecast, column, names)
    env_kwargs = {
        "prices": prices, "extra_features": extra, "window_size": args.window_size,
        "action_type": "continuous", "market": args.market, "commission": args.commission,
        "sell_tax": args.sell_tax, "slippage_bps": args.slippage_bps,
        "min_commission": args.min_commission, "initial_cash": args.initial_cash,
        "fill": args.fill, "fractional": args.fractional,
    }
    bench = None
    if args.benchmark:
        bench = _load([args.benchmark], args.benchmark_source or args.source, prices.index[0],
                      prices.index[-1], args, seed_opts)
    return {"prices": prices, "env_kwargs": env_kwargs, "period": (period_start, period_end),
            "splits": splits, "benchmark_prices": bench, "names": names}


def _symbol_names(prices) -> list[str]:
    import pandas as pd

    if isinstance(prices.columns, pd.MultiIndex):
        return [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
    return [str(prices.attrs.get("symbols", ["asset"])[0])]


def _resolve_start(env, period: tuple) -> tuple[Any, str | None]:
    """Start no earlier than the first date with a full window; say so if moved."""
    first = env.market.dates[env.window_size - 1]
    start, end = period
    if start is None or start >= first:
        return (start, end), None
    note = (
        f"note: the backtest starts on {first.date()}, the first date with "
        f"{env.window_size} rows of features (data from {env.market.dates[0].date()}; "
        f"asked for {start.date()})"
    )
    return (first, end), note


def _execute(args, strategy, run: dict[str, Any], out: Path) -> None:
    from stockgym.backtest.report import atomic_dir, write_backtest
    from stockgym.backtest.runner import run_policy
    from stockgym.envs.trading import StockTradingEnv

    env = StockTradingEnv(**run["env_kwargs"])
    period, note = _resolve_start(env, run["period"])
    if note:
        print(note)
    bench = run["benchmark_prices"] if run["benchmark_prices"] is not None else True
    result = run_policy(strategy, env, period, benchmark=bench, progress=True)
    config = _config(args, strategy, run, env, result, out, note)
    with atomic_dir(out, args.force) as tmp:
        metrics = write_backtest(result, tmp, config, risk_free=args.risk_free,
                                 plots=not args.no_plots)
    _print_report(config, metrics, out)


def _market_name(args, names: list[str]) -> str:
    from stockgym.envs.costs import market_of

    return market_of(names[0]) if args.market == "auto" else args.market


def _config(args, strategy, run, env, result, out: Path, note: str | None) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    import stockgym

    prices = run["prices"]
    bench_syms = [args.benchmark] if args.benchmark else list(env.symbols)
    return {
        "command": _command(args, out),
        "strategy": {"name": strategy.name, "params": strategy.params(),
                     "description": strategy.describe()},
        "seed": args.seed,
        "data": {
            "source": args.source, "symbols": list(args.symbols), "adjusted": not args.raw,
            "start": args.start, "end": args.end, "period": args.period,
            "loaded": {"first": str(prices.index[0].date()), "last": str(prices.index[-1].date()),
                       "rows": len(prices)},
            "hash": _data_hash(prices),
        },
        "splits": run["splits"],
        "backtest": {**result.period, "note": note},
        "market": _market_name(args, run["names"]),
        "env": env.config(),
        "benchmark": {"kind": "buy_and_hold", "symbols": bench_syms,
                      "source": (args.benchmark_source or args.source) if args.benchmark else args.source,
                      "same_costs": True},
        "forecast": ({"file": str(_forecast_file(args.forecast).resolve()), "column": args.forecast_column
                      or "forecast"} if args.forecast else None),
        "risk_free": args.risk_free,
        "out": str(out),
        "versions": {"stockgym": stockgym.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "python": platform.python_version()},
    }


def _command(args, out: Path) -> str:
    """The command line that re-runs this backtest (every flag that was given)."""
    skip = {"func", "command", "force", "symbols", "out"}
    parts = ["stockgym", "backtest", "--symbol", *args.symbols]
    for key, value in sorted(vars(args).items()):
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join([*parts, "--out", str(out)])


def _print_report(config: dict[str, Any], metrics: dict[str, Any], out: Path) -> None:
    from stockgym.backtest.report import format_costs, metrics_table

    env, bt = config["env"], config["backtest"]
    print(f"backtest   {config['strategy']['description']} on {', '.join(env['symbols'])} "
          f"[source={config['data']['source']}]")
    print(f"period     {bt['first']} .. {bt['last']} ({bt['days']} trading days; decisions "
          f"at the close, fills at the {'next open' if env['fill'] == 'open' else 'same close'})")
    print(f"costs      market={config['market']}: {format_costs(env['costs'])}")
    b = config["benchmark"]
    print(f"benchmark  buy-and-hold {' '.join(b['symbols'])} over the same dates, same costs")
    print()
    print(metrics_table(metrics))
    print()
    print(f"wrote {out}/ (metrics.json equity.csv trades.csv config.json"
          f"{'' if not (out / 'equity.png').exists() else ' equity.png drawdown.png trades.png'})")


# ---------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> None:
    """Handler of ``stockgym compare``."""
    from stockgym.backtest.compare import compare_frame, load_runs, text_table, write_compare
    from stockgym.backtest.report import OutputDirError, atomic_dir, check_out_dir

    if args.out:
        try:
            check_out_dir(args.out, args.force)
        except OutputDirError as exc:
            raise UsageError(str(exc)) from exc
    try:
        runs = load_runs(args.dirs)
    except ValueError as exc:
        raise UsageError(f"compare: {exc}") from exc
    frame = compare_frame(runs)
    print(text_table(frame))
    if args.out:
        with atomic_dir(args.out, args.force) as tmp:
            write_compare(runs, tmp)
        print(f"\nwrote {args.out}/ (compare.csv compare.md equity.png)")
    else:
        print("\n(add --out DIR to write compare.csv, compare.md and an overlaid equity plot)",
              file=sys.stderr)
