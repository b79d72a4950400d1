"""finance-datareader source with an on-disk cache.

:func:`fetch` is what ``load_prices(..., source="fdr" | "auto")`` calls. It returns a
frame passed through :func:`~stockgym.data.validate.normalize_columns` but not
validated, adjusted or sliced (``sources.py`` does that).

Cache layout: one gzip'd CSV per symbol in :func:`resolve_cache_dir`, named from the
upper-cased symbol with every character other than letters, digits and ``-`` escaped
(``^GSPC`` -> ``%5EGSPC.csv.gz``). The first line of each file is
``# stockgym-cache {json}`` recording the symbol, the *requested* range the file covers
(``covered_start`` is ``null`` for "from finance-datareader's default start"), the
fetch time and whether the source gave ``Adj Close``. Coverage is the requested range,
not the first and last data dates, so a range bounded by holidays is still a hit.

Rules:

* A request inside the covered range makes no network call.
* A wider request fetches only what is missing, before and/or after the cached range,
  overlapping the cache by one trading day at each seam. If the overlap's ``close`` or
  ``adj_close`` differs (relative tolerance 1e-6) the adjustment basis changed (a new
  split or dividend): the whole combined range is fetched again and replaces the file.
  Coverage stays one interval, so a request far from the cache also fetches the gap.
* Coverage never extends past today, so a request for a future end date (or none) is
  completed on a later day; today's possibly unfinished bar is checked at the next seam.
* Writes are atomic (temp file in the same directory, fsync, ``os.replace``). An
  unreadable cache file is a miss, never a crash.
* Every library call runs in a daemon thread bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.core import clean_stale_temps, write_bytes
from stockgym.data.errors import DataError
from stockgym.data.validate import OHLCV, normalize_columns

__all__ = ["cache_entries", "cache_path", "fetch", "resolve_cache_dir"]

ENV_VAR = "STOCKGYM_CACHE_DIR"
SUFFIX = ".csv.gz"
_MAGIC = "# stockgym-cache "
_FORMAT = 1
_RTOL = 1e-6
_DAY = pd.Timedelta(days=1)
# Device names Windows refuses as file names, whatever the extension.
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
_OFFLINE_HINT = (
    "Use --source sample (bundled offline data, load_prices(..., source='sample')) or "
    "--source csv (your own file), or retry when online."
)

# pandas < 3 parses floats up to one ulp off unless asked; pandas 3 is exact by
# default and deprecates the option.
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    """One symbol's cache file: data plus the requested range it covers."""

    frame: pd.DataFrame
    covered_start: pd.Timestamp | None  # None: from the library's default start
    covered_end: pd.Timestamp
    fetched_at: str
    symbol: str


# ----------------------------------------------------------------------------- paths


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The price cache directory: ``cache_dir``, else ``$STOCKGYM_CACHE_DIR``, else
    ``platformdirs.user_cache_dir("stockgym")/prices``. Not created here."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs  # only needed when no directory is given

    return Path(platformdirs.user_cache_dir("stockgym")) / "prices"


def _key(symbol: str) -> str:
    # finance-datareader upper-cases and strips whitespace, so "aapl" and "AAPL" are
    # the same data and must share one file.
    return "".join(str(symbol).split()).upper()


def _safe_name(key: str) -> str:
    """File-name-safe, injective encoding of a cache key (``BRK.B`` -> ``BRK%2EB``)."""
    out = []
    for ch in key:
        if ch.isascii() and (ch.isalnum() or ch == "-"):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    name = "".join(out) or "%"
    # "_" is always escaped above, so appending it cannot collide with another key.
    return name + "_" if name in _RESERVED else name


def cache_path(symbol: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of ``symbol``'s cache file (which may not exist)."""
    return resolve_cache_dir(cache_dir) / (_safe_name(_key(symbol)) + SUFFIX)


# ----------------------------------------------------------------------------- dates


def _today() -> pd.Timestamp:
    """Today's date (a function so tests can pin it)."""
    return pd.Timestamp.today().normalize()


def _day(ts: pd.Timestamp | None) -> pd.Timestamp | None:
    return None if ts is None else pd.Timestamp(ts).normalize()


def _fmt(ts: pd.Timestamp | None) -> str:
    return "the library's default start" if ts is None else str(ts.date())


def _lib_end(end: pd.Timestamp) -> pd.Timestamp | None:
    """The ``end`` to pass to finance-datareader for an inclusive ``end``.

    Its Yahoo reader (US tickers) treats ``end`` as exclusive midnight, so ask for one
    day more and trim; from today on pass ``None`` ("now"), the library's own default.
    """
    return None if end >= _today() else end + _DAY


def _trim(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    return df.loc[slice(start, end)]


# ----------------------------------------------------------------------------- network


def _run_bounded(fn: Callable[[], Any], timeout: float | None) -> Any:
    """Run ``fn`` in a daemon thread; raise ``TimeoutError`` after ``timeout`` seconds.

    Not a ThreadPoolExecutor: its workers are joined at interpreter exit, so a hung
    HTTP call (finance-datareader mostly passes no timeout to requests) would keep the
    process alive. A daemon thread is simply abandoned.
    """
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def work() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            fut.set_exception(exc)

    threading.Thread(target=work, name="stockgym-fdr", daemon=True).start()
    try:
        return fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError from None


def _download(
    symbol: str, start: pd.Timestamp | None, end: pd.Timestamp, timeout: float | None
) -> pd.DataFrame:
    """One finance-datareader call for [start, end] (inclusive), normalised and trimmed.

    Returns an empty frame when the library returns nothing (it does so silently for
    unknown codes, some indices and some network failures); raises :class:`DataError`
    on a timeout or any exception from the library.
    """
    where = f"[source=fdr, symbol={symbol}]"
    span = f"{_fmt(start)} .. {end.date()}"

    def call() -> Any:
        import FinanceDataReader  # imported lazily: slow, and only needed online

        return FinanceDataReader.DataReader(symbol, start, _lib_end(end))

    try:
        raw = _run_bounded(call, timeout)
    except TimeoutError:
        raise DataError(
            f"{where} the network did not answer within {timeout} s while downloading "
            f"{span}. {_OFFLINE_HINT}"
        ) from None
    except Exception as exc:
        raise DataError(
            f"{where} download failed for {span} (no network, or the data site refused: "
            f"{type(exc).__name__}: {exc}). {_OFFLINE_HINT}"
        ) from exc
    if not isinstance(raw, pd.DataFrame) or raw.empty:
        return pd.DataFrame()
    df = normalize_columns(raw, source="fdr", symbol=symbol).sort_index()
    df.index.freq = None  # as read back from the cache, so hits and misses look alike
    return _trim(df, start, end)


# ----------------------------------------------------------------------------- files


def _read_entry(path: Path, key: str) -> _Entry | None:
    """Read a cache file; ``None`` when missing or unreadable (treated as a miss)."""
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            head = fh.readline()
            if not head.startswith(_MAGIC):
                raise ValueError("no stockgym-cache header")
            meta = json.loads(head[len(_MAGIC) :])
            df = pd.read_csv(fh, index_col="date", parse_dates=["date"], **_EXACT_FLOATS)
        entry = _entry_from(meta, df, key)
    except Exception as exc:  # noqa: BLE001 - any damage means "refetch", never a crash
        log.warning("ignoring unreadable price cache %s: %s", path, exc)
        return None
    return entry


def _entry_from(meta: dict[str, Any], df: pd.DataFrame, key: str) -> _Entry:
    if meta.get("format") != _FORMAT or meta.get("symbol") != key:
        raise ValueError(f"header {meta} does not match symbol {key!r}")
    if not isinstance(df.index, pd.DatetimeIndex) or len(df) == 0:
        raise ValueError("no dated rows")
    if not df.index.is_monotonic_increasing or df.index.has_duplicates:
        raise ValueError("dates not sorted and unique")
    allowed = {*OHLCV, "adj_close"}
    if not set(OHLCV) <= set(df.columns) <= allowed:
        raise ValueError(f"unexpected columns {list(df.columns)}")
    if bool(meta["adjusted"]) != ("adj_close" in df.columns):
        raise ValueError("adjusted flag does not match the columns")
    start = meta["covered_start"]
    return _Entry(
        frame=df.astype("float64"),
        covered_start=None if start is None else pd.Timestamp(start),
        covered_end=pd.Timestamp(meta["covered_end"]),
        fetched_at=str(meta["fetched_at"]),
        symbol=key,
    )


def _write_entry(path: Path, entry: _Entry) -> None:
    """Atomically replace ``path``: temp file in the same dir, fsync, ``os.replace``."""
    df = entry.frame
    meta = {
        "format": _FORMAT,
        "symbol": entry.symbol,
        "covered_start": None if entry.covered_start is None else str(entry.covered_start.date()),
        "covered_end": str(entry.covered_end.date()),
        "fetched_at": entry.fetched_at,
        "adjusted": "adj_close" in df.columns,
        "rows": len(df),
    }
    # repr-precision floats (no float_format) round-trip float64 exactly.
    body = df.to_csv(index_label="date", date_format="%Y-%m-%d", lineterminator="\n")
    data = gzip.compress((_MAGIC + json.dumps(meta) + "\n" + body).encode("utf-8"), mtime=0)
    # The ".tmp" suffix of the temp file keeps a crash's leftover out of "*.csv.gz".
    write_bytes(path, data)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); not possible on Windows, where it is skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- cache logic


def _covers(entry: _Entry, start: pd.Timestamp | None, end: pd.Timestamp) -> bool:
    starts_ok = entry.covered_start is None or (start is not None and start >= entry.covered_start)
    return starts_ok and end <= entry.covered_end


def _close_enough(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b):
        return bool(np.isnan(a) and np.isnan(b))
    return abs(a - b) <= _RTOL * max(abs(a), abs(b))


def _seam_ok(cached: pd.DataFrame, chunk: pd.DataFrame, day: pd.Timestamp) -> bool:
    """Does ``chunk`` agree with the cache on the overlap ``day``?

    A different close or adj_close there means the source re-based its adjusted
    history (new split or dividend), so cached rows can no longer be stitched to it.
    """
    if chunk.empty:
        return True  # nothing to stitch (e.g. older than the source keeps)
    if ("adj_close" in chunk.columns) != ("adj_close" in cached.columns):
        return False
    if day not in chunk.index:
        return False  # cannot verify the seam: be safe and refetch
    cols = ["close", *(["adj_close"] if "adj_close" in cached.columns else [])]
    return all(_close_enough(cached.at[day, c], chunk.at[day, c]) for c in cols)


def _extend(
    symbol: str, entry: _Entry, start: pd.Timestamp | None, end: pd.Timestamp, timeout: float | None
) -> _Entry:
    """Fetch what ``entry`` lacks for [start, end]; refetch all if a seam disagrees."""
    cached = entry.frame
    new_start = (
        None if start is None or entry.covered_start is None else min(start, entry.covered_start)
    )
    new_end = max(end, entry.covered_end)
    chunks = []
    if new_start != entry.covered_start:
        first = cached.index[0]
        chunks.append((first, _download(symbol, new_start, first, timeout)))
    if new_end > entry.covered_end:
        last = cached.index[-1]
        chunks.append((last, _download(symbol, last, new_end, timeout)))
    if not all(_seam_ok(cached, chunk, day) for day, chunk in chunks):
        log.info("%s: adjustment basis changed; refetching %s..%s", symbol, new_start, new_end)
        frame = _download(symbol, new_start, new_end, timeout)
        if frame.empty:
            raise _empty_error(symbol, new_start, new_end)
    else:
        frame = pd.concat([cached, *(c for _, c in chunks if not c.empty)])
        # Keep the cached row on each overlap day (it was verified equal).
        frame = frame[~frame.index.duplicated(keep="first")].sort_index()
    return _Entry(frame, new_start, new_end, _now(), entry.symbol)


def _empty_error(symbol: str, start: pd.Timestamp | None, end: pd.Timestamp) -> DataError:
    return DataError(
        f"[source=fdr, symbol={symbol}] finance-datareader returned no data for "
        f"{_fmt(start)} .. {end.date()}: an unknown code or ticker, an index it does not "
        f"serve, no trading days in that range, or (for some sources) no network. "
        f"Check the symbol and dates. {_OFFLINE_HINT}"
    )


def fetch(
    symbol: str,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    timeout: float | None = 30.0,
) -> pd.DataFrame:
    """Daily prices of ``symbol`` for [start, end] from the cache or finance-datareader.

    Parameters
    ----------
    symbol : KRX code (``"005930"``), US ticker (``"AAPL"``) or any symbol
        ``FinanceDataReader.DataReader`` accepts (``"KS11"``, ``"US500"``).
    start, end : inclusive bounds; ``start=None`` means the library's default start
        (recorded as open-ended), ``end=None`` means today.
    cache_dir : see :func:`resolve_cache_dir`.
    refresh : ignore the cache, download [start, end] and replace the cache file.
    timeout : seconds each network call may take (``None``: unbounded).

    Returns the normalised (not validated) frame: columns ``open, high, low, close,
    volume`` and ``adj_close`` when the source gives ``Adj Close``. Raises
    :class:`DataError` when there is no data and no usable cache.
    """
    key = _key(symbol)
    path = cache_path(symbol, cache_dir)
    start = _day(start)
    today = _today()
    # Coverage never runs past today: a later request must be able to fetch newer bars.
    want_end = min(_day(end) if end is not None else today, today)
    entry = None if refresh else _read_entry(path, key)
    if entry is not None and _covers(entry, start, want_end):
        return _trim(entry.frame, start, want_end)
    try:
        if entry is None:
            frame = _download(symbol, start, want_end, timeout)
            if frame.empty:
                raise _empty_error(symbol, start, want_end)
            entry = _Entry(frame, start, want_end, _now(), key)
        else:
            entry = _extend(symbol, entry, start, want_end, timeout)
    except DataError as exc:
        return _offline_fallback(symbol, entry, start, end, exc)
    try:
        clean_stale_temps(path.parent)  # leftovers of killed cache writes
        _write_entry(path, entry)
    except OSError as exc:
        # A read-only or full disk must not stop the user from getting the data.
        warnings.warn(
            f"[source=fdr, symbol={symbol}] could not write the price cache {path}: {exc}",
            UserWarning,
            stacklevel=4,  # the caller of load_prices
        )
    return _trim(entry.frame, start, want_end)


def _offline_fallback(
    symbol: str,
    entry: _Entry | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    exc: DataError,
) -> pd.DataFrame:
    """After a failed download: serve the cache for an open-ended request, else re-raise.

    With ``end=None`` ("up to now") the newest cached bars are a fair answer offline;
    an explicit range the cache does not cover is an error, naming what is cached.
    """
    if entry is None:
        raise exc
    cov = f"{_fmt(entry.covered_start)} .. {entry.covered_end.date()}"
    start_ok = entry.covered_start is None or (start is not None and start >= entry.covered_start)
    if end is None and start_ok:
        warnings.warn(
            f"[source=fdr, symbol={symbol}] could not update the cache ({exc}); using "
            f"cached data up to {entry.covered_end.date()}",
            UserWarning,
            stacklevel=5,  # the caller of load_prices
        )
        return _trim(entry.frame, start, entry.covered_end)
    raise DataError(
        f"{exc} The cache holds {symbol} for {cov} only; a range inside it works offline."
    ) from exc


def cache_entries(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """What is cached, one dict per readable file, sorted by symbol.

    Keys: ``symbol``, ``first`` / ``last`` (first and last data dates, ISO strings),
    ``rows``, ``path`` (str), ``fetched_at`` (ISO UTC), ``covered_start`` (ISO or
    ``None`` for open-ended), ``covered_end``, ``adjusted`` (source gave Adj Close).
    Unreadable files are skipped (the next fetch replaces them).
    """
    root = resolve_cache_dir(cache_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*" + SUFFIX)):
        key = _key_from_header(path)
        entry = None if key is None else _read_entry(path, key)
        if entry is None:
            continue
        df = entry.frame
        out.append(
            {
                "symbol": entry.symbol,
                "first": str(df.index[0].date()),
                "last": str(df.index[-1].date()),
                "rows": len(df),
                "path": str(path),
                "fetched_at": entry.fetched_at,
                "covered_start": None
                if entry.covered_start is None
                else str(entry.covered_start.date()),
                "covered_end": str(entry.covered_end.date()),
                "adjusted": "adj_close" in df.columns,
            }
        )
    return sorted(out, key=lambda d: d["symbol"])


def _key_from_header(path: Path) -> str | None:
    """The symbol recorded in a file's header, if the file names it consistently."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            head = fh.readline()
        key = json.loads(head[len(_MAGIC) :])["symbol"] if head.startswith(_MAGIC) else None
    except Exception:  # noqa: BLE001 - unreadable: not listed
        return None
    if not isinstance(key, str) or path.name != _safe_name(key) + SUFFIX:
        return None
    return key
