"""Test a feature function for look-ahead: :func:`check_no_lookahead`.

A feature dated t may only use bars <= t. The check perturbs the future and looks at
the past: for each probe date t it multiplies every bar strictly after t by random
positive factors, calls your function on the original and on the perturbed frame, and
requires every output row dated <= t to be bit-identical (same dates, same columns,
same values, NaN in the same places). Use it in your own tests::

    from stockgym.data import check_no_lookahead, load_prices

    def my_features(prices):
        close = prices["close"]
        return pd.DataFrame({"mom_10": close / close.shift(10) - 1})

    check_no_lookahead(my_features, load_prices("AAPL", source="sample"))

It catches ``shift(-k)``, ``rolling(..., center=True)``, ``bfill()``, scalers or
statistics fit on the whole frame, and anything else that reads future values. It
cannot catch a leak that does not depend on prices (e.g. reading a file of future
labels), and a leak that only shows at dates it does not probe; probe dates you care
about with ``dates=``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError, LookaheadError

_PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")
_VOLUME_FIELDS = ("volume",)


def perturb_after(prices: pd.DataFrame, t, rng: np.random.Generator) -> pd.DataFrame:
    """A copy of ``prices`` with every bar strictly after ``t`` scaled by random factors.

    Per bar and symbol: open/high/low/close (and adj_close) by one factor in
    [0.5, 2] (so OHLC stay consistent), volume by another; any other numeric column by a
    third. Boolean columns (``tradable``) and values on or before ``t`` are unchanged;
    a zero volume stays zero, NaN stays NaN.
    """
    attrs = copy.deepcopy(prices.attrs)
    prices = prices.copy(deep=False)
    prices.attrs = {}  # pandas deep-copies attrs on every column access; keep them out
    after = np.asarray(prices.index > pd.Timestamp(t))
    n_after = int(after.sum())
    if n_after == 0:
        out = prices.copy(deep=True)
        out.attrs = attrs
        return out
    cols = prices.columns
    multi = cols.nlevels > 1
    symbols = list(cols.get_level_values(0).unique()) if multi else [None]
    draws = {
        kind: np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=(n_after, len(symbols))))
        for kind in ("price", "volume", "other")
    }
    sym_pos = {s: i for i, s in enumerate(symbols)}
    data = {}
    for j, col in enumerate(cols):
        series = prices.iloc[:, j]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            data[j] = series.to_numpy(copy=True)
            continue
        field = col[-1] if multi else col
        kind = (
            "price" if field in _PRICE_FIELDS else "volume" if field in _VOLUME_FIELDS else "other"
        )
        factor = draws[kind][:, sym_pos[col[0]] if multi else 0]
        values = series.to_numpy(dtype="float64", copy=True)
        values[after] = values[after] * factor
        data[j] = values
    out = pd.DataFrame(data, index=prices.index.copy())
    out.columns = cols
    out.attrs = attrs
    return out


def _default_dates(index: pd.DatetimeIndex, n: int) -> list[pd.Timestamp]:
    """The first date (catches back-fills of leading NaNs) and n-1 spread in the middle."""
    if len(index) < 2:
        return []
    picks = {0}
    if n > 1:
        picks.update(np.linspace(1, len(index) - 2, n - 1).round().astype(int).tolist())
    return [index[i] for i in sorted(picks)][:n]


def _as_frame(out, what: str) -> pd.DataFrame:
    if isinstance(out, pd.Series):
        out = out.to_frame()
    if not isinstance(out, pd.DataFrame):
        raise TypeError(
            f"check_no_lookahead: fn must return a DataFrame or Series indexed by date; "
            f"got {type(out).__name__} ({what})"
        )
    if not isinstance(out.index, pd.DatetimeIndex):
        raise TypeError("check_no_lookahead: fn's output must have a DatetimeIndex")
    return out


def _first_difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple | None:
    """(date, column, (a value, b value)) of the first differing cell, or None."""
    a, b = a.copy(deep=False), b.copy(deep=False)
    a.attrs, b.attrs = {}, {}
    for j, col in enumerate(a.columns):
        x, y = a.iloc[:, j], b.iloc[:, j]
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            xv, yv = x.to_numpy(), y.to_numpy()
            same = ((xv == yv) & (np.signbit(xv) == np.signbit(yv))) | (np.isnan(xv) & np.isnan(yv))
        else:
            xo, yo = x.to_numpy(dtype=object), y.to_numpy(dtype=object)
            na_x, na_y = pd.isna(xo), pd.isna(yo)
            same = (na_x & na_y) | (~na_x & ~na_y & (xo == yo))
            same = np.asarray(same, dtype=bool)
        if not same.all():
            i = int(np.argmin(same))
            return a.index[i], col, (x.iloc[i], y.iloc[i])
    return None


def _show(v) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)


def _compare(base: pd.DataFrame, other: pd.DataFrame, t, label: str) -> None:
    t = pd.Timestamp(t)
    a = base.loc[base.index <= t]
    b = other.loc[other.index <= t]
    if not a.index.equals(b.index):
        diff = a.index.symmetric_difference(b.index)
        raise LookaheadError(
            f"{label}: the output's dates <= {t.date()} changed when prices after "
            f"{t.date()} changed (first differing date {diff[0].date()})"
        )
    if not a.columns.equals(b.columns):
        raise LookaheadError(
            f"{label}: the output's columns changed when prices after {t.date()} changed: "
            f"{list(a.columns)} vs {list(b.columns)}"
        )
    found = _first_difference(a, b)
    if found is not None:
        date, col, (x, y) = found
        raise LookaheadError(
            f"{label}: output on {date.date()}, column {col!r} changed from {_show(x)} to "
            f"{_show(y)} "
            f"when only prices after {t.date()} changed - the value at {date.date()} "
            "uses future data"
        )


def check_no_lookahead(
    fn: Callable[[pd.DataFrame], pd.DataFrame | pd.Series],
    prices: pd.DataFrame,
    *,
    dates: Iterable | None = None,
    n_trials: int = 5,
    seed: int = 0,
) -> None:
    """Raise :class:`LookaheadError` if ``fn``'s output at a date t depends on prices after t.

    Parameters
    ----------
    fn : ``fn(prices) -> DataFrame | Series`` indexed by date (e.g.
        :func:`stockgym.data.build_features`). Called on copies; it may drop rows.
    prices : a single- or multi-symbol price frame (as from ``load_prices``).
    dates : probe dates t. Default: ``n_trials`` dates, the first date (so back-filled
        warm-up values are caught) and the rest spread evenly through the frame.
    n_trials : number of default probe dates (ignored when ``dates`` is given).
    seed : seed of the random perturbation factors (one fresh draw per probe date).

    Returns None when no leak is found. ``fn`` is first called twice on the same frame:
    a non-deterministic ``fn`` raises :class:`LookaheadError` saying so (it cannot be
    checked). The error names the first differing date and column.
    """
    if not isinstance(prices, pd.DataFrame) or not isinstance(prices.index, pd.DatetimeIndex):
        raise DataError("check_no_lookahead needs a price DataFrame with a DatetimeIndex")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    probes = _default_dates(prices.index, n_trials) if dates is None else list(dates)
    if not probes:
        raise DataError("check_no_lookahead: no probe dates (the frame needs >= 2 rows)")
    rng = np.random.default_rng(seed)
    name = getattr(fn, "__name__", repr(fn))
    base = _as_frame(fn(prices.copy(deep=True)), "original prices")
    again = _as_frame(fn(prices.copy(deep=True)), "original prices, second call")
    found = None
    if (
        base.shape == again.shape
        and base.index.equals(again.index)
        and base.columns.equals(again.columns)
    ):
        found = _first_difference(base, again)
    if found is not None or base.shape != again.shape:
        raise LookaheadError(
            f"{name}: two calls on the same prices gave different outputs "
            f"({'shape' if found is None else f'{found[0].date()}, {found[1]!r}'}); "
            "a non-deterministic function cannot be checked for look-ahead"
        )
    for t in probes:
        t = pd.Timestamp(t)
        perturbed = perturb_after(prices, t, rng)
        other = _as_frame(fn(perturbed), f"prices perturbed after {t.date()}")
        _compare(base, other, t, name)
