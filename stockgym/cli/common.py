"""Helpers every ``stockgym`` subcommand module may use (the CLI layer's own bottom):
date flags, output dirs, the backtest report printed to the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from stockgym.core import UsageError

#: torch CPU threads every training command uses unless told otherwise. torch's own
#: default (one per core) spins its thread pool against whatever else runs: on a busy
#: 2-core machine a run with torch's default was 7x slower than with one thread, while
#: on an idle machine the second thread gains little for these small networks (the
#: measurements: docs/benchmarks.md). ``--threads N`` changes it.
DEFAULT_THREADS = 1


def check_date(flag: str, value: str | None) -> pd.Timestamp | None:
    """``value`` as a date, or ``UsageError`` naming the flag."""
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{flag}: {value!r} is not a date; use YYYY-MM-DD") from exc


def default_out(name: str, symbols: list[str]) -> Path:
    """``runs/backtest-NAME-SYMBOLS``: where a backtest writes without ``--out``."""
    syms = "-".join(Path(s).stem for s in symbols)[:60]
    return Path("runs") / f"backtest-{name}-{syms}"


def check_out(out: str | Path, force: bool) -> None:
    """``UsageError`` unless ``out`` is new or empty (or ``force`` replaces it)."""
    from stockgym.backtest.report import OutputDirError, check_out_dir

    try:
        check_out_dir(out, force)
    except OutputDirError as exc:
        raise UsageError(str(exc)) from exc


def print_report(config: dict[str, Any], metrics: dict[str, Any], out: Path) -> None:
    from stockgym.backtest.report import format_report

    print(format_report(config, metrics, out))


#: The exchange-rule flags of ``backtest`` and ``train`` (their ``dest`` names are the
#: env keywords: board, price_limit, ticks, max_participation, impact, impact_coef).
RULE_FLAGS = ("board", "price_limit", "ticks", "max_participation", "impact", "impact_coef")


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return value == "on"


def _participation(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value!r}") from None
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction of the day's volume in (0, 1], got {x}")
    return x


def _nonnegative(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}") from None
    if not x >= 0.0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {x}")
    return x


def add_rule_flags(group: argparse._ArgumentGroup) -> None:
    """``--board``, ``--price-limit``, ``--ticks``, ``--max-participation``, ``--impact``,
    ``--impact-coef`` (docs/market-rules.md, "KRX rules by date")."""
    group.add_argument(
        "--board",
        choices=["auto", "kospi", "kosdaq"],
        help="KRX board for the tax split and pre-2023 ticks (default auto: the listing, "
        "else kospi)",
    )
    group.add_argument(
        "--price-limit",
        type=_on_off,
        metavar="{on,off}",
        help="refuse fills on limit-locked days (default: on for krx, off otherwise)",
    )
    group.add_argument(
        "--ticks",
        type=_on_off,
        metavar="{on,off}",
        help="round fills to the KRX tick (default: on for krx, off otherwise)",
    )
    group.add_argument(
        "--max-participation",
        type=_participation,
        help="cap each fill at this fraction of the day's volume (e.g. 0.025; default none)",
    )
    group.add_argument(
        "--impact", choices=["sqrt"], help="square-root market impact (default none)"
    )
    group.add_argument(
        "--impact-coef",
        type=_nonnegative,
        help="impact coefficient: price moves coef * sqrt(shares / volume) (default 0.01)",
    )
