"""Helpers every ``stockgym`` subcommand module may use (the CLI layer's own bottom):
date flags, output dirs, the backtest report printed to the terminal."""

from __future__ import annotations

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
