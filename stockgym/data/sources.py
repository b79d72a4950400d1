"""``load_prices``: one entry point for every market-data source.

Shapes returned (always float64 prices, a boolean ``tradable`` column, a tz-naive,
sorted, unique ``DatetimeIndex`` named ``date``):

* ``load_prices("AAPL", ...)`` (a single symbol as a string) -> columns
  ``open, high, low, close, volume, tradable``.
* ``load_prices(["AAPL", "MSFT"], ...)`` (a list, even of one) -> the same fields under
  a column ``MultiIndex`` with levels ``("symbol", "field")``: ``prices["AAPL"]`` is
  the one-symbol frame. Symbols are aligned on the dates they *all* have; what was
  dropped is reported in ``prices.attrs["dropped"]`` (symbol -> number of its dates
  dropped, first and last) and in a :class:`AlignmentWarning`. No symbol is ever dropped.

``frame.attrs`` also holds ``source``, ``symbols``, ``adjusted`` (True when every
symbol's prices were back-adjusted) and ``repairs`` (symbol -> opt-in repairs made,
only for symbols that had any) and ``gaps`` (symbol -> gaps longer than
:data:`~stockgym.data.quality.MAX_GAP_BDAYS` business days, only for symbols that have
any; each also reported in a :class:`~stockgym.data.quality.DataWarning`).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from stockgym.data import synthetic
from stockgym.data.errors import DataError
from stockgym.data.quality import find_gaps
from stockgym.data.validate import (
    adjust_prices,
    drop_adjustment,
    normalize_columns,
    to_timestamp,
    validate_ohlcv,
)

SOURCES = ("auto", "fdr", "csv", "sample", "synthetic")
_SYNTH_OPTIONS = ("seed", "n_days", "kind", "edge", "mu", "sigma", "corr", "lag", "synthetic_start")


class AlignmentWarning(UserWarning):
    """Dates were dropped to align several symbols on common dates."""


def sample_symbols() -> list[str]:
    """Symbols of the bundled real sample (offline): daily US equities 2000-2013."""
    files = resources.files("stockgym.data") / "sample"
    return sorted(p.name.split(".")[0] for p in files.iterdir() if p.name.endswith(".csv.gz"))


def load_prices(
    symbols: str | Sequence[str],
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    source: str = "auto",
    *,
    adjust: bool = True,
    sort: bool = False,
    dropna: bool = False,
    min_rows: int = 1,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    timeout: float = 30.0,
    tz: str | None = None,
    repair: bool = False,
    **options,
) -> pd.DataFrame:
    """Load daily OHLCV for one or several symbols (see module docstring for the shape).

    Parameters
    ----------
    symbols : a symbol (``"AAPL"``, KRX code ``"005930"``), a CSV path for
        ``source="csv"``, or a list of them.
    start, end : inclusive date bounds (anything ``pd.Timestamp`` reads).
    source : ``"fdr"`` finance-datareader (online, cached on disk), ``"csv"`` files,
        ``"sample"`` bundled real data (:func:`sample_symbols`), ``"synthetic"`` seeded
        generator (options ``seed, n_days, kind, edge, mu, sigma, corr, lag,
        synthetic_start``; see :mod:`stockgym.data.synthetic`), ``"auto"``: the disk
        cache, then finance-datareader, then a clear error.
    adjust : back-adjust OHLC by ``Adj Close / Close`` where the source has it (default);
        ``False`` returns raw prices.
    sort, dropna : opt-in repairs (sort unsorted dates; drop rows with missing prices);
        without them such data is rejected with a :class:`DataError`.
    min_rows : reject results with fewer rows (e.g. the window you need).
    cache_dir, refresh, timeout : finance-datareader cache directory (default
        ``$STOCKGYM_CACHE_DIR`` or the user cache dir), ignore the cache, and the bound
        in seconds on each network call.
    tz : for ``source="csv"``: the exchange's time zone that dates with UTC offsets are
        converted to (default: UTC stamps go to the file's exchange by its name, six-digit
        KRX codes ``Asia/Seoul``, else ``America/New_York``; other offsets are local
        times already). Other sources use the symbol's exchange.
    repair : carry the adjustment ratio over ``adj_close`` spikes (a warning and
        ``attrs["repairs"]``) instead of raising :class:`DataError`.
    """
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of {SOURCES}")
    single = isinstance(symbols, (str, Path))
    names = [str(symbols)] if single else [str(s) for s in symbols]
    if not names:
        raise DataError("no symbols given")
    if len(set(names)) != len(names):
        raise DataError(f"duplicate symbols in {names}")
    unknown = set(options) - set(_SYNTH_OPTIONS)
    if unknown:
        raise TypeError(f"load_prices() got unexpected option(s) {sorted(unknown)}")
    if options and source != "synthetic":
        raise TypeError(f"options {sorted(options)} only apply to source='synthetic'")
    start_ts = to_timestamp(start, "start")
    end_ts = to_timestamp(end, "end")
    if start_ts is not None and end_ts is not None and start_ts > end_ts:
        raise DataError(f"start {start_ts.date()} is after end {end_ts.date()}")

    raw = _read_raw(names, source, start_ts, end_ts, cache_dir, refresh, timeout, options, tz)
    frames: dict[str, pd.DataFrame] = {}
    for name in names:
        src, df = raw[name]
        df = validate_ohlcv(df, source=src, symbol=name, sort=sort, dropna=dropna, repair=repair)
        df = df.loc[slice(start_ts, end_ts)]
        if len(df) == 0:
            raise DataError(
                f"[source={src}, symbol={name}] no rows between {_fmt(start_ts)} and {_fmt(end_ts)}"
            )
        repairs = df.attrs.get("repairs", [])
        gaps = find_gaps(df.index, f"[source={src}, symbol={name}]")
        df = adjust_prices(df) if adjust else drop_adjustment(df)
        df.attrs.update(source=src, symbols=[name], repairs=repairs, gaps=gaps)
        frames[name] = df[["open", "high", "low", "close", "volume", "tradable"]]
        frames[name].attrs = dict(df.attrs)
    out = frames[names[0]] if single else _align(frames)
    fetched = [n for n in names if raw[n][0] == "fdr"]
    if fetched:  # the KRX board of each code, for the env's board="auto"
        from stockgym.data.krx_listing import krx_boards

        boards = krx_boards(fetched, cache_dir, timeout)
        if boards:
            out.attrs["boards"] = boards
    if len(out) < min_rows:
        raise DataError(
            f"[source={source}, symbols={names}] only {len(out)} rows, fewer than the "
            f"{min_rows} required (a window longer than the data?)"
        )
    return out


def _read_raw(names, source, start, end, cache_dir, refresh, timeout, options, tz=None):
    """Return {symbol: (source actually used, normalised raw frame)}."""
    out = {}
    for name in names:
        if source == "csv":
            out[name] = ("csv", _read_csv(name, tz))
        elif source == "sample":
            out[name] = ("sample", _read_sample(name))
        elif source in ("fdr", "auto"):
            from stockgym.data import fdr  # finance-datareader is imported only when used

            df = fdr.fetch(name, start, end, cache_dir=cache_dir, refresh=refresh, timeout=timeout)
            out[name] = ("fdr", df)
    if source == "synthetic":
        opts = dict(options)
        if "synthetic_start" in opts:
            opts["start"] = opts.pop("synthetic_start")
        try:
            gen = synthetic.generate(names, **opts)
        except ValueError as exc:
            raise DataError(f"[source=synthetic] {exc}") from exc
        out = {k: ("synthetic", v) for k, v in gen.items()}
    return out


def _read_csv(path: str, tz: str | None = None) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"[source=csv] file not found: {p}")
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if not head.lstrip(b"\xef\xbb\xbf").strip():
        raise DataError(f"[source=csv] {p} is empty")
    try:
        raw = pd.read_csv(p, sep=None, engine="python")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DataError(f"[source=csv] cannot parse {p}: {exc}") from exc
    if raw.empty:
        raise DataError(f"[source=csv] {p} has no rows")
    return normalize_columns(raw, source="csv", symbol=str(p), tz=tz)


def _read_sample(name: str) -> pd.DataFrame:
    known = sample_symbols()
    if name not in known:
        raise DataError(f"[source=sample] unknown sample symbol {name!r}; available: {known}")
    with resources.as_file(resources.files("stockgym.data") / "sample" / f"{name}.csv.gz") as p:
        raw = pd.read_csv(p)
    return normalize_columns(raw, source="sample", symbol=name)


def _align(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    common = None
    for df in frames.values():
        common = df.index if common is None else common.intersection(df.index)
    dropped = {}
    for name, df in frames.items():
        lost = df.index.difference(common)
        if len(lost):
            dropped[name] = {
                "dropped": int(len(lost)),
                "first": str(lost[0].date()),
                "last": str(lost[-1].date()),
            }
    if len(common) == 0:
        spans = {k: f"{v.index[0].date()}..{v.index[-1].date()}" for k, v in frames.items()}
        raise DataError(f"symbols share no common date: {spans}")
    if dropped:
        warnings.warn(
            "aligned on common dates; dropped per symbol: "
            + ", ".join(
                f"{k}: {v['dropped']} ({v['first']}..{v['last']})" for k, v in dropped.items()
            ),
            AlignmentWarning,
            stacklevel=3,
        )
    out = pd.concat(
        {k: v.loc[common] for k, v in frames.items()}, axis=1, names=["symbol", "field"]
    )
    first = next(iter(frames.values()))
    # attrs stay small: pandas deep-copies them on almost every operation on the frame.
    out.attrs = {
        "source": first.attrs.get("source"),
        "symbols": list(frames),
        "adjusted": all(v.attrs.get("adjusted") for v in frames.values()),
        "repairs": {k: v.attrs["repairs"] for k, v in frames.items() if v.attrs.get("repairs")},
        "gaps": {k: v.attrs["gaps"] for k, v in frames.items() if v.attrs.get("gaps")},
        "dropped": dropped,
    }
    return out


def _fmt(ts: pd.Timestamp | None) -> str:
    return "the beginning" if ts is None else str(ts.date())
