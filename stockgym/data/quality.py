"""Checks for real-world price files: time zones, adjustment-ratio spikes, long gaps.

* **Time zones.** Dates with UTC offsets become the exchange's local day before the
  time of day is dropped. With a ``tz`` argument every stamp is converted to it.
  Without one, UTC stamps (some exports store Korean midnight as ``15:00+00:00`` the
  day before) are converted to :func:`exchange_tz` of the symbol (six-digit KRX codes:
  ``Asia/Seoul``; anything else: ``America/New_York``, the rule ``market="auto"`` uses
  for costs), and non-zero offsets are local times already (yfinance writes New York
  session opens at ``-05:00`` in winter and ``-04:00`` in summer): their date is kept.
* **Adjustment-ratio spikes.** With an ``adj_close`` column the adjustment factor is
  ``f_t = adj_close_t / close_t``. Dividends and splits change it by a step that the
  raw close mirrors; a corrupt cell moves the adjusted series alone. Day ``t`` is
  flagged when ``|log(f_t / f_{t-1})| > log(RATIO_JUMP)`` and the adjusted close moved
  more than the raw close that day: ``|log(adj_t / adj_{t-1})| > |log(close_t /
  close_{t-1})|`` (a split left in the raw close moves the raw series, not the
  adjusted one, and passes). Default: :class:`DataError` with the dates; with
  ``repair=True`` each flagged factor is replaced by the previous day's factor, with a
  :class:`DataWarning` and an entry in ``attrs["repairs"]``.
* **Gaps.** Consecutive bars more than :data:`MAX_GAP_BDAYS` business days apart
  (longer than any exchange holiday, e.g. Chuseok or 9/11 closures) are reported in a
  :class:`DataWarning` and in ``attrs["gaps"]``: an env would step over them as one day.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError

RATIO_JUMP = 1.5
MAX_GAP_BDAYS = 10
KRX_TZ = "Asia/Seoul"
US_TZ = "America/New_York"
_KRX_CODE = re.compile(r"^\d{6}$")
_MAX_LISTED = 5


class DataWarning(UserWarning):
    """Data accepted with a repair or a caveat (the message says what and where)."""


def exchange_tz(symbol: str) -> str:
    """The exchange's time zone for ``symbol`` (a ticker or a CSV path: its file stem):
    six-digit KRX codes -> ``Asia/Seoul``, anything else -> ``America/New_York``."""
    stem = re.split(r"[\\/]", str(symbol))[-1].split(".")[0]
    return KRX_TZ if _KRX_CODE.match(stem) else US_TZ


def parse_dates(values: pd.Index, where: str, tz: str | None, symbol: str) -> pd.DatetimeIndex:
    """Dates as a tz-naive DatetimeIndex of exchange-local days.

    Offsets: with ``tz`` given, every instant is converted to ``tz``. Without it, UTC
    stamps (``Z``, ``+00:00``) are converted to :func:`exchange_tz` of ``symbol``, and
    other offsets, mixed ones included (DST), are local times already: their own date
    is kept. A value that does not parse like the first one is named with its row."""
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(values))
    except (ValueError, TypeError) as exc:
        if "tz" not in str(exc).lower() and "offset" not in str(exc).lower():
            raise DataError(_bad_date(values, where)) from exc
        try:  # mixed UTC offsets (DST): each a local time, or converted to tz
            stamps = [pd.Timestamp(v) for v in values]
        except (ValueError, TypeError) as exc2:
            raise DataError(_bad_date(values, where)) from exc2
        if tz is not None or any(t.tz is None for t in stamps):
            idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
        else:
            idx = pd.DatetimeIndex([t.tz_localize(None) for t in stamps])
    if idx.tz is not None:
        is_utc = idx[:1].tz_convert(None).equals(idx[:1].tz_localize(None))
        if tz is not None or is_utc:
            idx = idx.tz_convert(tz or exchange_tz(symbol))
        idx = idx.tz_localize(None)
    return idx.normalize()


def _bad_date(values: pd.Index, where: str) -> str:
    """The message naming the first value that does not parse like the first one."""
    coerced = pd.to_datetime(pd.Index(values), errors="coerce", utc=True)
    for i, (raw, ts) in enumerate(zip(values, coerced, strict=False)):
        if pd.isna(ts) and not (isinstance(raw, float) and math.isnan(raw)):
            return (
                f"{where} cannot read dates: value {raw!r} (data row {i + 1}) is not a date "
                f"in the format of the first one ({values[0]!r})"
            )
    return f"{where} cannot read dates: mixed formats (the first is {values[0]!r})"


def check_adjustment(df: pd.DataFrame, where: str, tradable: np.ndarray, repair: bool):
    """Flag adjustment-ratio spikes (see module docstring). Returns ``df`` (repaired
    where ``repair``) and the repair notes; raises :class:`DataError` otherwise."""
    if "adj_close" not in df.columns:
        return df, []
    rows = np.flatnonzero(tradable)
    if len(rows) < 2:
        return df, []
    close = df["close"].to_numpy()[rows]
    adj = df["adj_close"].to_numpy()[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = np.log(adj / close)
        jump = np.abs(np.diff(log_f))
        moved_adj = np.abs(np.diff(np.log(adj)))
        moved_raw = np.abs(np.diff(np.log(close)))
    flagged = (jump > math.log(RATIO_JUMP)) & (moved_adj > moved_raw)
    if not flagged.any():
        return df, []
    dates = df.index[rows[1:][flagged]]
    listed = ", ".join(str(d.date()) for d in dates[:_MAX_LISTED])
    more = f" and {len(dates) - _MAX_LISTED} more" if len(dates) > _MAX_LISTED else ""
    if not repair:
        raise DataError(
            f"{where} 'adj_close'/'close' ratio jumps by more than {RATIO_JUMP}x while the "
            f"close does not on {listed}{more} (a corrupt adjusted price?); fix the file "
            "or pass repair=True to carry the previous day's ratio over those days"
        )
    # Replace each flagged factor by the previous (repaired) one, then re-check the next
    # day against it: a one-cell spike is then one repair, not two.
    f = np.exp(log_f)
    fixed = []
    for k in range(1, len(f)):
        if not np.isfinite(f[k]) or not np.isfinite(f[k - 1]):
            continue
        step = abs(math.log(f[k] / f[k - 1]))
        a_move = abs(math.log(close[k] * f[k] / (close[k - 1] * f[k - 1])))
        r_move = abs(math.log(close[k] / close[k - 1]))
        if step > math.log(RATIO_JUMP) and a_move > r_move:
            f[k] = f[k - 1]
            fixed.append(df.index[rows[k]])
    out = df.copy()
    adj_col = out["adj_close"].to_numpy().copy()
    adj_col[rows] = close * f
    out["adj_close"] = adj_col
    note = (
        f"adj_close: ratio spike on {', '.join(str(d.date()) for d in fixed[:_MAX_LISTED])}"
        f"{more if len(fixed) > _MAX_LISTED else ''} replaced by the previous day's ratio"
    )
    warnings.warn(f"{where} {note}", DataWarning, stacklevel=4)
    return out, [note]


def find_gaps(index: pd.DatetimeIndex, where: str) -> list[dict]:
    """Gaps longer than :data:`MAX_GAP_BDAYS` business days between consecutive bars, as
    ``{"after", "before", "business_days"}`` dicts, with one :class:`DataWarning`."""
    if len(index) < 2:
        return []
    days = index.values.astype("datetime64[D]")
    bdays = np.busday_count(days[:-1], days[1:])
    big = np.flatnonzero(bdays > MAX_GAP_BDAYS)
    gaps = [
        {
            "after": str(index[i].date()),
            "before": str(index[i + 1].date()),
            "business_days": int(bdays[i]),
        }
        for i in big
    ]
    if gaps:
        shown = ", ".join(
            f"{g['after']}..{g['before']} ({g['business_days']} business days)"
            for g in gaps[:_MAX_LISTED]
        )
        warnings.warn(
            f"{where} {len(gaps)} gap(s) longer than {MAX_GAP_BDAYS} business days between "
            f"bars: {shown}; an env steps over each as one day",
            DataWarning,
            stacklevel=4,
        )
    return gaps
