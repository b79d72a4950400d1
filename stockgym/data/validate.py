"""Normalise and validate OHLCV frames; back-adjust prices.

Every source (fdr, csv, sample, synthetic) goes through :func:`normalize_columns`,
then :func:`validate_ohlcv`, then (by default) :func:`adjust_prices`. Nothing is
"fixed" silently: the only repairs are opt-in (``dropna=True`` drops rows whose prices
are missing on days with volume; ``sort=True`` sorts unsorted dates; ``repair=True``
carries the adjustment ratio over corrupt ``adj_close`` cells) and each is reported in
``frame.attrs["repairs"]``. Time zones, adjustment-ratio spikes and gaps:
:mod:`stockgym.data.quality`.

Halted (non-tradable) bars - zero volume, or zero / missing OHLC with zero volume, as
KRX data shows suspended days - are kept and flagged ``tradable=False``; their prices
are left as the source gave them (the env values positions at the last tradable close).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError
from stockgym.data.quality import check_adjustment, parse_dates

OHLCV = ("open", "high", "low", "close", "volume")
PRICE_COLS = ("open", "high", "low", "close")

_ALIASES = {
    "date": "date",
    "datetime": "date",
    "timestamp": "date",
    "time": "date",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "vol": "volume",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "adjusted close": "adj_close",
    "adjusted_close": "adj_close",
    "change": "change",
}


def to_timestamp(value: object, what: str) -> pd.Timestamp | None:
    """``value`` (a date string, datetime, Timestamp or ``None``) as a tz-naive
    Timestamp; ``DataError`` naming ``what`` and the value when it is not a date."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} date {value!r} is not a date") from exc
    if ts is pd.NaT:
        raise DataError(f"{what} date {value!r} is not a date")
    return ts.tz_localize(None) if ts.tz is not None else ts


def _where(source: str, symbol: str) -> str:
    return f"[source={source}, symbol={symbol}]"


def normalize_columns(
    raw: pd.DataFrame, *, source: str, symbol: str, tz: str | None = None
) -> pd.DataFrame:
    """Lower-case and rename columns, move the date into a tz-naive DatetimeIndex.

    Accepts a ``Date`` column in any case or a date-like index (finance-datareader
    returns US tickers with an unnamed index). Unknown extra columns are dropped;
    ``Adj Close`` is kept as ``adj_close``. Dates with UTC offsets become the
    exchange's local day (:func:`~stockgym.data.quality.parse_dates`: ``tz``, else
    the symbol's exchange for UTC stamps) before the time of day is dropped. Two columns that mean the same
    field (``Close`` and ``close``) are a :class:`DataError`.
    """
    where = _where(source, symbol)
    if raw.shape[1] == 0:
        raise DataError(f"{where} the file has no columns (an empty file?)")
    df = raw.copy()
    rename = {}
    for col in df.columns:
        key = str(col).lstrip("\ufeff").strip().lower().replace("-", " ")
        if key in _ALIASES:
            rename[col] = _ALIASES[key]
    targets: dict[str, list[str]] = {}
    for col in df.columns:
        targets.setdefault(rename.get(col, str(col)), []).append(str(col))
    clash = {k: v for k, v in targets.items() if len(v) > 1}
    if clash:
        field, cols = next(iter(clash.items()))
        raise DataError(
            f"{where} columns {cols} all mean {field!r}; keep one of them "
            f"(found {list(map(str, raw.columns))})"
        )
    df = df.rename(columns=rename)
    if "date" in df.columns:
        df = df.set_index("date")
    elif not isinstance(df.index, pd.DatetimeIndex):
        # A default RangeIndex or integer index would silently become 1970 nanoseconds.
        raise DataError(
            f"{where} missing column ['date']; found {list(map(str, raw.columns))}. "
            "Expected Date/Open/High/Low/Close/Volume (any case)."
        )
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise DataError(
            f"{where} missing column(s) {missing}; found {list(map(str, raw.columns))}. "
            "Expected Date/Open/High/Low/Close/Volume (any case)."
        )
    values = df.index
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
        # Integer dates are YYYYMMDD (as KRX files write them), never epoch numbers.
        try:
            values = pd.Index(values.astype("int64").astype(str))
            values = pd.to_datetime(values, format="%Y%m%d")
        except (ValueError, TypeError) as exc:
            bad = next((v for v in values if _not_a_date(v, "%Y%m%d")), values[0])
            raise DataError(
                f"{where} cannot read dates: value {bad!r} is not a YYYYMMDD date"
            ) from exc
    df.index = parse_dates(values, where, tz, symbol)
    df.index.name = "date"
    keep = [c for c in (*OHLCV, "adj_close") if c in df.columns]
    df = df[keep]
    for col in keep:
        if not pd.api.types.is_numeric_dtype(df[col]):
            conv = pd.to_numeric(df[col], errors="coerce")
            bad = conv.isna() & df[col].notna()
            if bad.any():
                date = df.index[bad.to_numpy()][0]
                raise DataError(
                    f"{where} column {col!r} has a non-numeric value "
                    f"{df[col][bad].iloc[0]!r} on {date.date()}"
                )
            df[col] = conv
    return df.astype("float64")


def _not_a_date(v: object, fmt: str) -> bool:
    try:
        pd.to_datetime(v, format=fmt)
        return False
    except (ValueError, TypeError):
        return True


def tradable_mask(df: pd.DataFrame) -> np.ndarray:
    """A bar is tradable when it has volume > 0 (a halted day shows zero volume)."""
    vol = df["volume"].to_numpy()
    return np.isfinite(vol) & (vol > 0)


def validate_ohlcv(
    df: pd.DataFrame,
    *,
    source: str,
    symbol: str,
    sort: bool = False,
    dropna: bool = False,
    min_rows: int = 1,
    repair: bool = False,
) -> pd.DataFrame:
    """Check a normalised frame and add the ``tradable`` column.

    Raises :class:`DataError` naming source, symbol, column, date and value for:
    duplicate or unsorted dates (``sort=True`` sorts instead), NaN/inf or <= 0 prices on
    tradable days (``dropna=True`` drops rows with missing prices instead), high below
    max(open, close) or low above min(open, close), negative volume, fewer than
    ``min_rows`` rows, ``adj_close / close`` ratio spikes
    (:func:`~stockgym.data.quality.check_adjustment`; ``repair=True`` repairs them).
    """
    where = _where(source, symbol)
    repairs: list[str] = []
    if len(df) == 0:
        raise DataError(f"{where} no rows (empty result for this date range?)")
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise DataError(f"{where} duplicate date {dup.date()}")
    if not df.index.is_monotonic_increasing:
        if not sort:
            pos = int(np.argmax(np.diff(df.index.asi8) < 0)) + 1
            raise DataError(
                f"{where} dates not sorted: {df.index[pos].date()} comes after "
                f"{df.index[pos - 1].date()} (pass sort=True to sort them)"
            )
        df = df.sort_index()
        repairs.append("sorted dates")
    vol = df["volume"].to_numpy()
    neg = vol < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise DataError(f"{where} negative volume {vol[i]} on {df.index[i].date()}")
    if np.isinf(vol).any():
        i = int(np.argmax(np.isinf(vol)))
        raise DataError(f"{where} infinite volume on {df.index[i].date()}")
    if dropna:
        bad_rows = df[list(PRICE_COLS)].isna().any(axis=1).to_numpy() & ~(vol == 0)
        bad_rows |= np.isnan(vol)
        if bad_rows.any():
            repairs.append(f"dropna: dropped {int(bad_rows.sum())} rows with missing values")
            df = df[~bad_rows]
            vol = df["volume"].to_numpy()
    if np.isnan(vol).any():
        i = int(np.argmax(np.isnan(vol)))
        raise DataError(
            f"{where} missing volume on {df.index[i].date()} (pass dropna=True to drop such rows)"
        )
    tradable = tradable_mask(df)
    for col in (*PRICE_COLS, *(["adj_close"] if "adj_close" in df.columns else [])):
        x = df[col].to_numpy()
        bad = tradable & ~np.isfinite(x)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where} column {col!r} is {x[i]} on tradable day {df.index[i].date()} "
                "(volume > 0); pass dropna=True to drop such rows"
            )
        bad = tradable & (x <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where} column {col!r} is {x[i]} (<= 0) on tradable day {df.index[i].date()}"
            )
    o, h, lo, c = (df[k].to_numpy() for k in PRICE_COLS)
    tol = 1e-9
    with np.errstate(invalid="ignore"):
        bad_h = tradable & (h < np.maximum(o, c) * (1 - tol))
        bad_l = tradable & (lo > np.minimum(o, c) * (1 + tol))
    if bad_h.any():
        i = int(np.argmax(bad_h))
        raise DataError(
            f"{where} column 'high' is {h[i]} on {df.index[i].date()}, below "
            f"max(open={o[i]}, close={c[i]})"
        )
    if bad_l.any():
        i = int(np.argmax(bad_l))
        raise DataError(
            f"{where} column 'low' is {lo[i]} on {df.index[i].date()}, above "
            f"min(open={o[i]}, close={c[i]})"
        )
    if len(df) < min_rows:
        raise DataError(f"{where} only {len(df)} rows, fewer than the {min_rows} required")
    df, notes = check_adjustment(df, where, tradable, repair)
    repairs.extend(notes)
    df = df.copy()
    df["tradable"] = tradable
    df.attrs["repairs"] = repairs
    return df


def adjust_prices(df: pd.DataFrame) -> pd.DataFrame:
    """Back-adjust OHLC by ``adj_close / close`` (volume divided by the same factor).

    Frames without ``adj_close`` (KRX data from finance-datareader) are returned as they
    are. Halted bars (no usable close) keep their raw values. Drops ``adj_close``.
    """
    if "adj_close" not in df.columns:
        out = df.copy()
        out.attrs["adjusted"] = False
        return out
    out = df.drop(columns="adj_close")
    close = df["close"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = df["adj_close"].to_numpy() / close
    ok = np.isfinite(factor) & (factor > 0)
    factor = np.where(ok, factor, 1.0)
    for col in PRICE_COLS:
        out[col] = df[col].to_numpy() * factor
    out["volume"] = df["volume"].to_numpy() / factor
    out.attrs = dict(df.attrs)
    out.attrs["adjusted"] = True
    return out


def drop_adjustment(df: pd.DataFrame) -> pd.DataFrame:
    """Raw prices: drop the ``adj_close`` column if present."""
    out = df.drop(columns="adj_close") if "adj_close" in df.columns else df.copy()
    out.attrs = dict(df.attrs)
    out.attrs["adjusted"] = False
    return out
