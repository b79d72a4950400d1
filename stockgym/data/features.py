"""Trailing-window, scale-free features: :func:`build_features`.

Every feature dated t is computed from bars <= t only (pandas ``rolling`` / ``ewm``
over past rows; never ``center=True``, never a back-fill), and none is a raw price, so
the same model works on a $10 and a $1,000 stock.

Features (``FEATURES``; ``N`` is the trailing window in rows; a name with a numeric
suffix sets it, e.g. ``"sma_ratio_50"``; the base name alone uses the default window
shown in brackets; the output column is always the canonical name with the window,
e.g. ``"rsi"`` -> ``"rsi_14"``, except ``log_return`` with window 1 -> ``"log_return"``):

``log_return[_N]`` [1]
    ``log(c_t / c_{t-N})``.
``volatility_N`` [20]
    rolling sample std (ddof=1) of the 1-day log returns over N rows.
``sma_ratio_N`` [20]
    ``c_t / mean(c_{t-N+1..t}) - 1``.
``rsi_N`` [14]
    Wilder's RSI **scaled to [0, 1]** (0.7 is the classic "70"):
    ``avg_gain / (avg_gain + avg_loss)`` where the averages are Wilder's smoothing
    (seeded with the simple mean of the first N close-to-close changes, then
    ``avg_t = avg_{t-1} + (x_t - avg_{t-1}) / N``). A flat window gives 0.5.
``macd``
    ``(EMA_12(c) - EMA_26(c)) / c_t`` (EMAs with ``adjust=False``, valid after 26 rows).
``macd_signal``
    EMA_9 of ``macd`` (valid after 26 + 8 rows).
``bollinger_b_N`` [20]
    %B = ``(c_t - (sma - 2 sd)) / (4 sd)`` with the population std (ddof=0) of the last
    N closes; 0.5 when the window is flat.
``volume_z_N`` [20]
    z-score of ``log1p(volume)`` against its trailing N-row mean and sample std (0 when
    the window is flat). Volume is used as is: a halted day (volume 0) gives
    ``log1p(0) = 0``, a large negative z, never ``-inf``.

Halted bars: ``c`` above is the *valuation close*: the close of tradable bars,
forward-filled from the past (a trailing operation); rows before a symbol's first
tradable bar stay NaN and fall into the warm-up. So a halted day has log return 0.

Output: float64, no inf (divisions are guarded). A single-symbol frame gives flat
columns (feature names); a multi-symbol frame gives a column ``MultiIndex``
``("symbol", "feature")``. Warm-up rows (rows where any feature of any symbol is NaN,
at the start) are dropped; ``out.attrs`` reports ``warmup_dropped`` (count),
``first_date`` (ISO date of the first row kept), ``features`` and ``symbols``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError

#: Base feature names (see the module docstring for definitions).
FEATURES: list[str] = [
    "log_return",
    "volatility",
    "sma_ratio",
    "rsi",
    "macd",
    "macd_signal",
    "bollinger_b",
    "volume_z",
]

#: Default windows of the windowed features (``None``: no window).
DEFAULT_WINDOWS: dict[str, int | None] = {
    "log_return": 1,
    "volatility": 20,
    "sma_ratio": 20,
    "rsi": 14,
    "macd": None,
    "macd_signal": None,
    "bollinger_b": 20,
    "volume_z": 20,
}

#: Features used when ``names`` is not given: 1-day log return, 20-day volatility,
#: close over its 20-day mean, 14-day RSI, 20-day volume z-score.
DEFAULT_FEATURES: tuple[str, ...] = (
    "log_return",
    "volatility_20",
    "sma_ratio_20",
    "rsi_14",
    "volume_z_20",
)

# windows below which a feature is undefined (std needs 2 points)
_MIN_WINDOW = {
    "log_return": 1,
    "volatility": 2,
    "sma_ratio": 1,
    "rsi": 1,
    "bollinger_b": 2,
    "volume_z": 2,
}
_SUFFIX = re.compile(r"^(?P<base>[a-z_]+?)_(?P<n>\d+)$")
_MACD_FAST, _MACD_SLOW, _MACD_SIGNAL = 12, 26, 9


def _valid_names() -> str:
    parts = []
    for base in FEATURES:
        w = DEFAULT_WINDOWS[base]
        parts.append(base if w is None else f"{base}[_N] (default N={w})")
    return ", ".join(parts)


def _parse(name: str) -> tuple[str, int | None, str]:
    """Return (base, window, canonical column name) or raise DataError."""
    if not isinstance(name, str):
        raise DataError(f"feature names must be strings, got {name!r}")
    if name in FEATURES:
        base, window = name, DEFAULT_WINDOWS[name]
    else:
        m = _SUFFIX.match(name)
        if m is None or m["base"] not in FEATURES or DEFAULT_WINDOWS[m["base"]] is None:
            raise DataError(f"unknown feature {name!r}; valid names: {_valid_names()}")
        base, window = m["base"], int(m["n"])
        if window < _MIN_WINDOW[base]:
            raise DataError(
                f"feature {name!r}: window must be >= {_MIN_WINDOW[base]}, got {window}"
            )
    if window is None:
        canon = base
    elif base == "log_return" and window == 1:
        canon = "log_return"
    else:
        canon = f"{base}_{window}"
    return base, window, canon


def feature_names(names: str | Iterable[str] | None = None) -> list[str]:
    """The (canonical) column names :func:`build_features` produces for ``names``.

    Validates the names (unknown name or duplicate -> :class:`DataError`).
    ``feature_names(["rsi", "sma_ratio_50"]) == ["rsi_14", "sma_ratio_50"]``.
    """
    return [canon for _, _, canon in _resolve(names)]


def _resolve(names) -> list[tuple[str, int | None, str]]:
    if names is None:
        names = DEFAULT_FEATURES
    elif isinstance(names, str):
        names = [names]
    specs = [_parse(n) for n in names]
    if not specs:
        raise DataError("no feature names given")
    seen: dict[str, str] = {}
    for given, (_, _, canon) in zip(names, specs, strict=True):
        if canon in seen:
            raise DataError(f"features {seen[canon]!r} and {given!r} are the same ({canon!r})")
        seen[canon] = given
    return specs


def _wide(prices: pd.DataFrame) -> tuple[bool, list, dict[str, np.ndarray]]:
    """Split a price frame into (single, symbols, {field: (T, N) float array})."""
    if not isinstance(prices, pd.DataFrame):
        raise DataError(f"prices must be a DataFrame, got {type(prices).__name__}")
    if not isinstance(prices.index, pd.DatetimeIndex):
        raise DataError("prices must have a DatetimeIndex (as load_prices returns)")
    if not prices.index.is_monotonic_increasing or prices.index.has_duplicates:
        raise DataError("prices dates must be sorted and unique")
    cols = prices.columns
    single = cols.nlevels == 1
    if single:
        symbols = list(prices.attrs.get("symbols") or [None])[:1]
        fields = set(cols)
    elif cols.nlevels == 2:
        symbols = list(cols.get_level_values(0).unique())
        fields = set(cols.get_level_values(1))
    else:
        raise DataError(f"prices columns must have 1 or 2 levels, got {cols.nlevels}")
    missing = [f for f in ("close", "volume") if f not in fields]
    if missing:
        raise DataError(f"prices lack field(s) {missing}; have {sorted(map(str, fields))}")

    def get(field: str) -> np.ndarray:
        if single:
            return prices[field].to_numpy(dtype="float64").reshape(-1, 1)
        sub = prices.xs(field, axis=1, level=1)
        absent = [s for s in symbols if s not in sub.columns]
        if absent:
            raise DataError(f"field {field!r} missing for symbol(s) {absent}")
        return sub.reindex(columns=symbols).to_numpy(dtype="float64")

    arrays = {"close": get("close"), "volume": get("volume")}
    if "tradable" in fields:
        arrays["tradable"] = get("tradable").astype(bool)
    else:
        vol = arrays["volume"]
        arrays["tradable"] = np.isfinite(vol) & (vol > 0)
    return single, symbols, arrays


def _valuation_close(close: np.ndarray, tradable: np.ndarray) -> pd.DataFrame:
    with np.errstate(invalid="ignore"):
        ok = tradable & np.isfinite(close) & (close > 0)
    return pd.DataFrame(np.where(ok, close, np.nan)).ffill()


def _safe_div(num: pd.DataFrame, den: pd.DataFrame, fill: float) -> pd.DataFrame:
    """num / den, ``fill`` where den is 0 (or tiny), NaN kept where inputs are NaN."""
    n, d = num.to_numpy(), den.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = n / d
    flat = np.isfinite(n) & np.isfinite(d) & (np.abs(d) <= 1e-12)
    out = np.where(flat, fill, out)
    out[~np.isfinite(out) & ~np.isnan(out)] = np.nan  # never inf
    return pd.DataFrame(out)


def _wilder(x: pd.DataFrame, n: int) -> pd.DataFrame:
    """Wilder's smoothing, seeded by the simple mean of the first n values (per column)."""
    seed = x.rolling(n, min_periods=n).mean()
    valid = seed.notna().to_numpy()
    first = np.where(valid.any(axis=0), valid.argmax(axis=0), len(x))  # seed row per column
    rows = np.arange(len(x))[:, None]
    arr = x.to_numpy().copy()
    arr[rows < first] = np.nan
    cols = np.nonzero(first < len(x))[0]
    arr[first[cols], cols] = seed.to_numpy()[first[cols], cols]
    return pd.DataFrame(arr).ewm(alpha=1.0 / n, adjust=False).mean()


def _compute(
    base: str,
    window: int | None,
    c: pd.DataFrame,
    logc: pd.DataFrame,
    ret1: pd.DataFrame,
    logv: pd.DataFrame,
) -> pd.DataFrame:
    if base == "log_return":
        return ret1 if window == 1 else logc - logc.shift(window)
    if base == "volatility":
        return ret1.rolling(window, min_periods=window).std()
    if base == "sma_ratio":
        return _safe_div(c, c.rolling(window, min_periods=window).mean(), np.nan) - 1.0
    if base == "rsi":
        diff = c.diff()
        gain = _wilder(diff.clip(lower=0.0), window)
        loss = _wilder((-diff).clip(lower=0.0), window)
        return _safe_div(gain, gain + loss, 0.5)
    if base in ("macd", "macd_signal"):
        fast = c.ewm(span=_MACD_FAST, adjust=False, min_periods=_MACD_SLOW).mean()
        slow = c.ewm(span=_MACD_SLOW, adjust=False, min_periods=_MACD_SLOW).mean()
        macd = _safe_div(fast - slow, c, 0.0)
        if base == "macd":
            return macd
        return macd.ewm(span=_MACD_SIGNAL, adjust=False, min_periods=_MACD_SIGNAL).mean()
    if base == "bollinger_b":
        roll = c.rolling(window, min_periods=window)
        mean, sd = roll.mean(), roll.std(ddof=0)
        return _safe_div(c - (mean - 2.0 * sd), 4.0 * sd, 0.5)
    if base == "volume_z":
        roll = logv.rolling(window, min_periods=window)
        return _safe_div(logv - roll.mean(), roll.std(), 0.0)
    raise AssertionError(base)  # pragma: no cover - _parse rejects unknown names


def build_features(prices: pd.DataFrame, names: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Per-date feature frame from a price frame (see the module docstring).

    Parameters
    ----------
    prices : a frame from :func:`stockgym.data.load_prices` (single symbol: flat
        columns with at least ``close`` and ``volume``, ``tradable`` optional - without
        it a bar is tradable when its volume > 0; several symbols: column MultiIndex
        ``(symbol, field)``).
    names : feature names (default :data:`DEFAULT_FEATURES`); see :data:`FEATURES`.

    Returns a float64 frame indexed by date (warm-up rows dropped, reported in
    ``attrs["warmup_dropped"]`` and ``attrs["first_date"]``). All symbols are computed
    together on wide (dates x symbols) frames. Raises :class:`DataError` for unknown
    names, malformed frames, too few rows for the windows, or a NaN after the warm-up
    (missing values in the middle of the input).
    """
    specs = _resolve(names)
    single, symbols, arr = _wide(prices)
    t_len, n_sym = arr["close"].shape
    c = _valuation_close(arr["close"], arr["tradable"])
    logc = np.log(c)
    ret1 = logc.diff()
    with np.errstate(invalid="ignore"):
        vol = arr["volume"]
        logv = pd.DataFrame(np.log1p(np.where(vol >= 0, vol, np.nan)))

    out = np.empty((t_len, n_sym, len(specs)), dtype="float64")
    for k, (base, window, _) in enumerate(specs):
        out[:, :, k] = _compute(base, window, c, logc, ret1, logv).to_numpy(dtype="float64")
    out[np.isinf(out)] = np.nan

    bad_row = np.isnan(out).reshape(t_len, -1).any(axis=1)
    ok_rows = np.nonzero(~bad_row)[0]
    cols = [canon for _, _, canon in specs]
    if len(ok_rows) == 0:
        raise DataError(
            f"no rows left after the warm-up of features {cols} ({t_len} rows given; "
            "a window longer than the data, or a symbol that never trades?)"
        )
    first = int(ok_rows[0])
    rest = bad_row[first:]
    if rest.any():
        i = first + int(np.argmax(rest))
        j, k = np.argwhere(np.isnan(out[i]))[0]
        who = "" if single else f" of symbol {symbols[j]!r}"
        raise DataError(
            f"feature {cols[k]!r}{who} is NaN on {prices.index[i].date()} after the warm-up "
            "(missing close/volume in the middle of the input?)"
        )
    index = prices.index[first:]
    if single:
        frame = pd.DataFrame(out[first:, 0, :], index=index, columns=pd.Index(cols, name="feature"))
    else:
        columns = pd.MultiIndex.from_product([symbols, cols], names=["symbol", "feature"])
        frame = pd.DataFrame(out[first:].reshape(len(index), -1), index=index, columns=columns)
    frame.index.name = prices.index.name or "date"
    frame.attrs = {
        "warmup_dropped": first,
        "first_date": str(index[0].date()),
        "features": cols,
        "symbols": [s for s in symbols if s is not None],
    }
    return frame
