"""``stockgym data show | fetch | list``."""

from __future__ import annotations

import argparse

DATA_EXAMPLES = """examples:
  stockgym data show AAPL --source sample
  stockgym data show AAPL MSFT --source sample --start 2005-01-01 --end 2006-12-31
  stockgym data show prices.csv --source csv --raw
  stockgym data show X Y --source synthetic --seed 3
  stockgym data fetch 005930 AAPL --start 2015-01-01     (finance-datareader, cached)
  stockgym data list
"""


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", help="first date (inclusive), e.g. 2010-01-01")
    p.add_argument("--end", help="last date (inclusive)")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="download cache (default $STOCKGYM_CACHE_DIR or user cache)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand group."""
    fmt = argparse.RawDescriptionHelpFormatter
    data = sub.add_parser(
        "data", help="fetch, show and list market data", epilog=DATA_EXAMPLES, formatter_class=fmt
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    show = dsub.add_parser(
        "show",
        help="rows, date range, first/last lines and basic stats of a price series",
        epilog="examples:\n  stockgym data show AAPL --source sample\n"
        "  stockgym data show my.csv --source csv --rows 3\n",
        formatter_class=fmt,
    )
    show.add_argument("symbols", nargs="+", metavar="SYMBOL", help="symbol(s) or CSV path(s)")
    show.add_argument(
        "--source",
        default="auto",
        choices=["auto", "fdr", "csv", "sample", "synthetic"],
        help="where prices come from (default: auto = cache, then finance-datareader)",
    )
    _add_range(show)
    show.add_argument(
        "--raw", action="store_true", help="raw prices (no split/dividend adjustment)"
    )
    show.add_argument("--rows", type=int, default=5, help="lines to show at each end (default 5)")
    show.add_argument("--seed", type=int, default=0, help="seed for --source synthetic")
    _add_cache(show)

    fetch = dsub.add_parser(
        "fetch",
        help="download daily prices with finance-datareader into the cache",
        epilog="examples:\n  stockgym data fetch 005930 000660 --start 2015-01-01\n"
        "  stockgym data fetch AAPL --refresh\n",
        formatter_class=fmt,
    )
    fetch.add_argument("symbols", nargs="+", metavar="SYMBOL", help="KRX code or US ticker")
    _add_range(fetch)
    fetch.add_argument("--refresh", action="store_true", help="ignore the cache and refetch")
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds per download")
    _add_cache(fetch)

    lst = dsub.add_parser(
        "list",
        help="what is in the download cache",
        epilog="examples:\n  stockgym data list\n  stockgym data list --cache-dir ./cache\n",
        formatter_class=fmt,
    )
    _add_cache(lst)
    show.set_defaults(func=_cmd_data_show)
    fetch.set_defaults(func=_cmd_data_fetch)
    lst.set_defaults(func=_cmd_data_list)


def _cmd_data_show(args: argparse.Namespace) -> None:
    from stockgym.data import load_prices

    opts = {"seed": args.seed} if args.source == "synthetic" else {}
    extra = {} if args.source == "synthetic" else {"cache_dir": args.cache_dir}
    for sym in args.symbols:
        df = load_prices(
            sym, args.start, args.end, source=args.source, adjust=not args.raw, **extra, **opts
        )
        _print_summary(sym, df, args.rows)


def _print_summary(symbol: str, df, rows: int) -> None:
    import numpy as np
    import pandas as pd

    close = df["close"].where(df["tradable"]).ffill()
    rets = np.log(close).diff().dropna()
    adjusted = "adjusted" if df.attrs.get("adjusted") else "raw"
    print(f"{symbol}  [source={df.attrs.get('source')}, {adjusted} prices]")
    print(
        f"  rows {len(df)}  from {df.index[0].date()} to {df.index[-1].date()}  "
        f"halted days {int((~df['tradable']).sum())}"
    )
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        shown = df if len(df) <= 2 * rows else pd.concat([df.head(rows), df.tail(rows)])
        shown = shown.assign(volume=shown["volume"].round().astype("Int64"))  # shares: whole
        print(shown.to_string(float_format=lambda x: f"{x:,.4f}"))
    if len(rets):
        print(
            f"  close min {close.min():,.4f}  max {close.max():,.4f}  "
            f"daily log-return mean {rets.mean():+.5f}  std {rets.std():.5f}  "
            f"annualised vol {rets.std() * np.sqrt(252):.2%}"
        )
    print()


def _cmd_data_fetch(args: argparse.Namespace) -> None:
    from stockgym.data import load_prices

    for sym in args.symbols:
        df = load_prices(
            sym,
            args.start,
            args.end,
            source="fdr",
            cache_dir=args.cache_dir,
            refresh=args.refresh,
            timeout=args.timeout,
        )
        print(f"{sym}: {len(df)} rows {df.index[0].date()}..{df.index[-1].date()} cached")


def _cmd_data_list(args: argparse.Namespace) -> None:
    from stockgym.data.fdr import cache_entries, resolve_cache_dir

    entries = cache_entries(args.cache_dir)
    where = resolve_cache_dir(args.cache_dir)
    if not entries:
        print(f"cache {where} is empty (stockgym data fetch SYMBOL fills it)")
        return
    print(f"cache {where}")
    print(f"{'symbol':<12}{'first':<12}{'last':<12}{'rows':>7}  fetched")
    for e in entries:
        print(
            f"{e['symbol']:<12}{str(e['first'])[:10]:<12}{str(e['last'])[:10]:<12}"
            f"{e['rows']:>7}  {e.get('fetched_at', '')}"
        )
