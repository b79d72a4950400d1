"""A baseline strategy backtest from a :class:`BacktestSpec`: what ``stockgym backtest
--strategy`` runs, as a library call (:func:`backtest_strategy`).

Data are loaded with enough history before ``start`` for the features' warm-up, the
observation window and the strategy's own look-back; the backtest then starts no earlier
than the first date with a full window (a note says so when it had to move).
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.runner import BacktestResult, run_policy
from stockgym.backtest.strategies import Strategy
from stockgym.data import load_prices, split
from stockgym.envs.costs import market_of
from stockgym.envs.trading import StockTradingEnv


@dataclass
class BacktestSpec:
    """What to backtest a strategy on, with which costs (the ``stockgym backtest`` flags
    of the same names). ``period``: ``all`` (``start``..``end``) or one part of the
    default 64/16/20 split of the loaded data."""

    symbols: list[str] = field(default_factory=list)
    source: str = "auto"
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    period: str = "all"
    raw: bool = False
    cache_dir: str | None = None
    seed: int = 0
    market: str = "auto"
    commission: float | None = None
    sell_tax: float | None = None
    slippage_bps: float | None = None
    min_commission: float | None = None
    board: str | None = None
    price_limit: bool | None = None
    ticks: bool | None = None
    max_participation: float | None = None
    impact: str | None = None
    impact_coef: float | None = None
    initial_cash: float = 10_000_000.0
    fill: str = "open"
    fractional: bool = False
    window_size: int = 30
    forecast: str | None = None
    forecast_column: str | None = None
    benchmark: str | None = None
    benchmark_source: str | None = None
    risk_free: float = 0.0


def lookback_days(window: int, strategy_lookback: int) -> int:
    """Calendar days to load before ``start``: feature warm-up, the observation window
    and the strategy's history, with room for weekends and holidays."""
    rows = 25 + window + strategy_lookback
    return int(rows * 1.6) + 20


def _load(
    spec: BacktestSpec, symbols: list[str], source: str, start: Any, end: Any
) -> pd.DataFrame:
    opts: dict[str, Any] = {"seed": spec.seed} if source == "synthetic" else {}
    if source in ("auto", "fdr"):
        opts["cache_dir"] = spec.cache_dir
    target = symbols[0] if len(symbols) == 1 else list(symbols)
    prices = load_prices(target, start, end, source=source, adjust=not spec.raw, **opts)
    if source == "csv":  # name CSV symbols by file stem, not path
        names = [Path(s).stem for s in symbols]
        if len(symbols) == 1:
            prices.attrs["symbols"] = names
        else:
            prices = prices.rename(columns=dict(zip(symbols, names, strict=True)), level=0)
    return prices


def forecast_file(path: str) -> Path:
    """The forecast CSV at ``path`` (a file, or a walk-forward run dir's forecasts.csv)."""
    p = Path(path)
    if p.is_dir() and (p / "forecasts.csv").is_file():  # a `stockgym forecast walk-forward` run
        p = p / "forecasts.csv"
    if not p.is_file():
        raise FileNotFoundError(f"--forecast: file not found: {p}")
    return p


def read_forecast(path: str, column: str, symbols: list[str]) -> pd.DataFrame:
    """Forecasts as extra env features: ``date, COLUMN`` (one symbol) or ``date, symbol,
    COLUMN`` (several; the ``(symbol, COLUMN)`` columns)."""
    p = forecast_file(path)
    try:
        raw = pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--forecast: cannot read {p}: {exc}") from exc
    cols = {c.lower(): c for c in raw.columns}
    if "date" not in cols or column not in raw.columns:
        raise ValueError(
            f"--forecast: {p} needs columns 'date' and {column!r} (and 'symbol' for several "
            f"symbols); it has {list(raw.columns)}"
        )
    try:
        raw["date"] = pd.to_datetime(raw[cols["date"]])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--forecast: {p} has a 'date' that is not a date: {exc}") from exc
    if len(symbols) == 1 and "symbol" not in cols:
        return raw.set_index("date")[[column]].astype("float64")
    if "symbol" not in cols:
        raise ValueError(f"--forecast: {p} needs a 'symbol' column for several symbols")
    wide = raw.pivot(index="date", columns=cols["symbol"], values=column).astype("float64")
    missing = [s for s in symbols if s not in wide.columns]
    if missing:
        raise ValueError(f"--forecast: {p} has no rows for symbol(s) {missing}")
    return pd.concat({s: wide[[s]].set_axis([column], axis=1) for s in symbols}, axis=1)


def data_hash(prices: pd.DataFrame) -> str:
    """A short SHA-256 of the prices (index included)."""
    h = hashlib.sha256(pd.util.hash_pandas_object(prices, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def symbol_names(prices: pd.DataFrame) -> list[str]:
    if isinstance(prices.columns, pd.MultiIndex):
        return [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
    return [str(prices.attrs.get("symbols", ["asset"])[0])]


def resolve_start(env: StockTradingEnv, period: tuple) -> tuple[tuple, str | None]:
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


def backtest_strategy(
    spec: BacktestSpec, strategy: Strategy, *, out: str | Path = "", command: str = "",
    progress: bool = False,
) -> tuple[BacktestResult, dict[str, Any]]:  # fmt: skip
    """Run ``strategy`` through :class:`~stockgym.envs.StockTradingEnv` (next-open fills,
    the spec's costs) against buy-and-hold over the same dates and costs. Returns the
    result and the ``config.json`` of its report (with ``backtest.note`` saying when the
    start had to move)."""
    load_start = None
    if spec.start is not None and spec.period == "all":
        load_start = spec.start - pd.Timedelta(
            days=lookback_days(spec.window_size, strategy.lookback)
        )
    prices = _load(spec, spec.symbols, spec.source, load_start, spec.end)
    period, splits = (spec.start, spec.end), None
    if spec.period != "all":
        splits = split(prices).dates
        part = splits[spec.period]
        period = (pd.Timestamp(part["first"]), pd.Timestamp(part["last"]))
    names = symbol_names(prices)
    column = spec.forecast_column or ("forecast" if strategy.name == "forecast_sign" else None)
    extra = read_forecast(spec.forecast, column, names) if spec.forecast else None
    env = StockTradingEnv(
        prices, extra_features=extra, window_size=spec.window_size, action_type="continuous",
        market=spec.market, commission=spec.commission, sell_tax=spec.sell_tax,
        slippage_bps=spec.slippage_bps, min_commission=spec.min_commission,
        board=spec.board, price_limit=spec.price_limit, ticks=spec.ticks,
        max_participation=spec.max_participation, impact=spec.impact,
        impact_coef=spec.impact_coef,
        initial_cash=spec.initial_cash, fill=spec.fill, fractional=spec.fractional,
    )  # fmt: skip
    period, note = resolve_start(env, period)
    bench: Any = True
    if spec.benchmark:
        bench_source = spec.benchmark_source or spec.source
        bench = _load(spec, [spec.benchmark], bench_source, prices.index[0], prices.index[-1])
    result = run_policy(strategy, env, period, benchmark=bench, progress=progress)
    import stockgym

    config = {
        "command": command,
        "strategy": {
            "name": strategy.name,
            "params": strategy.params(),
            "description": strategy.describe(),
        },
        "seed": spec.seed,
        "data": {
            "source": spec.source,
            "symbols": list(spec.symbols),
            "adjusted": not spec.raw,
            "start": None if spec.start is None else str(spec.start.date()),
            "end": None if spec.end is None else str(spec.end.date()),
            "period": spec.period,
            "loaded": {
                "first": str(prices.index[0].date()),
                "last": str(prices.index[-1].date()),
                "rows": len(prices),
            },
            "hash": data_hash(prices),
        },
        "splits": splits,
        "backtest": {**result.period, "note": note},
        "market": market_of(names[0]) if spec.market == "auto" else spec.market,
        "env": env.config(),
        "benchmark": {
            "kind": "buy_and_hold",
            "symbols": [spec.benchmark] if spec.benchmark else list(env.symbols),
            "source": (spec.benchmark_source or spec.source) if spec.benchmark else spec.source,
            "same_costs": True,
        },
        "forecast": (
            {"file": str(forecast_file(spec.forecast).resolve()), "column": column}
            if spec.forecast
            else None
        ),
        "risk_free": spec.risk_free,
        "out": str(out),
        "versions": {
            "stockgym": stockgym.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
    }
    return result, config
