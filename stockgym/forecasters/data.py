"""Windowed samples and targets for the forecasters (leak-free by construction).

A *sample* is made at the close of a decision date ``t`` (row ``i`` of the input frame):
its input is the ``window`` rows of scaled input features ending at ``t`` (oldest
first), its target is dated ``t + horizon`` rows:

``"log_return"`` (default)
    ``log(c[t+h] / c[t])``: the next ``h``-day log return of the valuation close.
``"direction"``
    ``1.0`` if that log return is > 0 else ``0.0`` (trained with BCE-with-logits;
    predictions are probabilities of "up").
``"close"``
    ``c[t+h]``, the price level (the notebook's target; scaled to [0, 1] on the training
    period for training and mapped back to prices for every prediction).

``c`` is the valuation close: the close of tradable bars, carried forward over halted
days (as in :func:`stockgym.data.build_features`).

Inputs are feature names of :func:`stockgym.data.build_features` (trailing windows only)
and/or the raw fields ``open, high, low, close, volume`` (prices carried forward over
halted days). Defaults depend on the target: the scale-free
:data:`stockgym.data.DEFAULT_FEATURES` with a standard scaler for returns and
directions; raw OHLCV with a min-max scaler for ``"close"`` (what the notebook did,
but with the scaler fit on the training period only).

Parts: a sample belongs to a part (train / valid / test) when its decision date lies
in the part *and* its target date does too - so the last ``h`` decisions of the
training period, whose targets fall in the validation period, are dropped (purged)
rather than leaking validation prices into training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stockgym.data import DEFAULT_FEATURES, DataError, build_features, feature_names

TARGETS: tuple[str, ...] = ("log_return", "direction", "close")
RAW_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_PRICE_FIELDS = ("open", "high", "low", "close")


def default_features(target: str) -> list[str]:
    """Input features used when none are named: raw OHLCV for ``"close"``, else
    :data:`stockgym.data.DEFAULT_FEATURES`."""
    return list(RAW_FIELDS) if target == "close" else list(DEFAULT_FEATURES)


def default_scaler(target: str) -> str:
    """Input scaler kind used when none is named (``"minmax"`` for ``"close"``)."""
    return "minmax" if target == "close" else "standard"


def check_target(target: str, horizon: int) -> None:
    """Raise ``ValueError`` for an unknown target or a horizon < 1."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")


def single_symbol(
    prices: pd.DataFrame, symbol: str | None = None
) -> tuple[str | None, pd.DataFrame]:
    """``(symbol, one-symbol frame)``: forecasters model one symbol at a time.

    A multi-symbol frame needs ``symbol`` (or holds exactly one symbol).
    """
    if not isinstance(prices, pd.DataFrame):
        raise DataError(f"prices must be a DataFrame, got {type(prices).__name__}")
    if isinstance(prices.columns, pd.MultiIndex):
        names = [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
        if symbol is None:
            if len(names) != 1:
                raise DataError(f"prices hold symbols {names}: name the one to forecast")
            symbol = names[0]
        if symbol not in names:
            raise DataError(f"symbol {symbol!r} is not in the prices (have {names})")
        frame = prices[symbol].copy()
        frame.attrs = {**prices.attrs, "symbols": [symbol]}
        return symbol, frame
    given = (prices.attrs.get("symbols") or [None])[0]
    return (symbol if symbol is not None else given), prices


def valuation_close(prices: pd.DataFrame) -> pd.Series:
    """Close of tradable bars, carried forward over halted bars (a trailing operation)."""
    if "close" not in prices.columns:
        raise DataError("prices lack a 'close' column")
    close = prices["close"].astype("float64")
    if "tradable" in prices.columns:
        close = close.where(prices["tradable"].astype(bool))
    return close.where(close > 0).ffill()


def build_inputs(prices: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Unscaled input frame (one column per feature, warm-up rows dropped).

    Indicator names go to :func:`stockgym.data.build_features`; raw fields are taken
    from ``prices`` (prices carried forward over halted bars). Every value dated t uses
    bars <= t only.
    """
    if isinstance(features, str) or not len(features):
        raise DataError(f"features must be a non-empty list of names, got {features!r}")
    if len(set(features)) != len(features):
        raise DataError(f"duplicate feature names in {list(features)}")
    raw = [f for f in features if f in RAW_FIELDS]
    indicators = [f for f in features if f not in RAW_FIELDS]
    columns: dict[str, pd.Series] = {}
    if indicators:
        built = build_features(prices, indicators)
        for name, canon in zip(indicators, feature_names(indicators), strict=True):
            columns[name] = built[canon]
    if raw:
        missing = [f for f in raw if f not in prices.columns]
        if missing:
            raise DataError(f"prices lack field(s) {missing} named as input features")
        tradable = (
            prices["tradable"].astype(bool)
            if "tradable" in prices.columns
            else pd.Series(True, index=prices.index)
        )
        for f in raw:
            col = prices[f].astype("float64")
            columns[f] = col.where(tradable).ffill() if f in _PRICE_FIELDS else col
    frame = pd.DataFrame(columns).reindex(columns=list(features))
    if indicators:
        frame = frame.loc[built.index]
    ok = frame.notna().all(axis=1).to_numpy()
    if not ok.any():
        raise DataError(f"no rows with every input feature {list(features)}")
    first = int(np.argmax(ok))
    frame = frame.iloc[first:]
    if not ok[first:].all():
        bad = frame.index[~ok[first:]][0]
        raise DataError(f"an input feature is missing on {bad.date()} after the warm-up")
    frame.index.name = "date"
    return frame


def targets(close: np.ndarray, target: str, horizon: int) -> np.ndarray:
    """Target of each row (float64; NaN for the last ``horizon`` rows, not known yet)."""
    check_target(target, horizon)
    close = np.asarray(close, dtype="float64")
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        future, now = close[horizon:], close[:-horizon]
        if target == "close":
            out[:-horizon] = future
        else:
            ret = np.log(future / now)
            out[:-horizon] = ret if target == "log_return" else (ret > 0).astype("float64")
    return out


def target_scaling(target: str, y_train: np.ndarray) -> tuple[float, float]:
    """``(shift, scale)`` from the training targets: log returns divided by their RMS
    (zero stays zero), prices min-max to [0, 1], directions unchanged."""
    y = np.asarray(y_train, dtype="float64")
    if target == "log_return":
        rms = float(np.sqrt(np.mean(y**2))) if len(y) else 0.0
        return 0.0, (rms if rms > 0 else 1.0)
    if target == "close":
        lo, hi = float(np.min(y)), float(np.max(y))
        return lo, (hi - lo if hi > lo else 1.0)
    return 0.0, 1.0


@dataclass(frozen=True, eq=False)
class Windows:
    """Samples in decision-date order.

    ``x``: (n, window, n_features) float32 scaled inputs; ``y``: (n,) float64 targets
    (NaN where not known yet); ``dates``: decision dates; ``target_dates``: dates of
    the targets (NaT where beyond the data); ``base_close`` / ``future_close``: the
    valuation close at the decision and at the target date (NaN beyond the data).
    """

    x: np.ndarray
    y: np.ndarray
    dates: pd.DatetimeIndex
    target_dates: pd.DatetimeIndex
    base_close: np.ndarray
    future_close: np.ndarray

    def __len__(self) -> int:
        return len(self.dates)

    def select(self, mask: np.ndarray) -> Windows:
        """The samples where ``mask`` (bool array or integer positions) selects."""
        return Windows(
            self.x[mask],
            self.y[mask],
            self.dates[mask],
            self.target_dates[mask],
            self.base_close[mask],
            self.future_close[mask],
        )

    def known(self) -> Windows:
        """The samples whose target is known (inside the data)."""
        return self.select(np.isfinite(self.y))

    def between(self, first, last) -> Windows:
        """Samples with decision date >= ``first`` and target date <= ``last`` (a part)."""
        first, last = pd.Timestamp(first), pd.Timestamp(last)
        mask = (self.dates >= first) & (self.target_dates <= last)  # NaT compares False
        return self.select(np.asarray(mask))


def make_windows(
    scaled: pd.DataFrame, close: pd.Series, window: int, horizon: int, target: str
) -> Windows:
    """Every sample with a full window from a scaled input frame and the valuation close.

    ``close`` is reindexed to ``scaled``'s dates. Raises :class:`DataError` when the
    window is longer than the rows available.
    """
    check_target(target, horizon)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    n = len(scaled)
    if n < window:
        span = f"{scaled.index[0].date()}..{scaled.index[-1].date()}" if n else "no dates"
        raise DataError(
            f"window={window} is longer than the {n} rows with every input feature ({span})"
        )
    arr = scaled.to_numpy(dtype="float32")
    x = np.lib.stride_tricks.sliding_window_view(arr, window, axis=0)  # (n-w+1, F, w)
    x = np.ascontiguousarray(x.transpose(0, 2, 1))
    c = close.reindex(scaled.index).to_numpy(dtype="float64")
    y = targets(c, target, horizon)
    future = np.full(n, np.nan)
    stamps = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if n > horizon:
        future[: n - horizon] = c[horizon:]
        stamps[: n - horizon] = scaled.index.values[horizon:]
    tdates = pd.DatetimeIndex(stamps)
    sl = slice(window - 1, None)
    return Windows(x, y[sl], scaled.index[sl], tdates[sl], c[sl], future[sl])
