"""Turn a price frame (+ features) into the arrays an env steps over.

The env never fits statistics: features come from ``stockgym.data.build_features``
(trailing windows only), optional extra columns (e.g. forecasts) are joined by date,
and an optional *already fitted* scaler is applied. Rows with any missing feature
(warm-up) are dropped; the first ``window_size - 1`` remaining rows only feed the
first observation's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError
from stockgym.data.validate import OHLCV, validate_ohlcv


@dataclass(frozen=True)
class MarketArrays:
    """Aligned arrays over T bars and A assets.

    ``ref_open[t, i]``: price an order at bar t fills around (the open; for a halted
    bar the last tradable close). ``mark[t, i]``: valuation close (last tradable close
    for halted bars). ``features``: (T, A, F) float32. ``open``, ``high``, ``low``,
    ``close``, ``volume``: the bar as the source gave it (float64; the exchange rules of
    :mod:`stockgym.envs.rules` read them at the fill bar); ``prev_close``: the last
    tradable close before the bar (NaN on the first bar of the data), or the frame's own
    ``prev_close`` column where it has one.
    """

    dates: pd.DatetimeIndex
    symbols: list[str]
    feature_names: list[str]
    ref_open: np.ndarray
    mark: np.ndarray
    tradable: np.ndarray
    features: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    prev_close: np.ndarray


def split_symbols(prices: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{symbol: one-symbol frame} for a single (flat) or multi-symbol frame."""
    if not isinstance(prices, pd.DataFrame):
        raise DataError(f"prices must be a pandas DataFrame, got {type(prices).__name__}")
    if isinstance(prices.columns, pd.MultiIndex):
        syms = list(dict.fromkeys(prices.columns.get_level_values(0)))
        return {str(s): prices[s] for s in syms}
    attrs_syms = prices.attrs.get("symbols") or ["asset"]
    return {str(attrs_syms[0]): prices}


def _checked(symbol: str, df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise DataError(f"[env, symbol={symbol}] price frame lacks column(s) {missing}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"[env, symbol={symbol}] price frame needs a DatetimeIndex of dates")
    base = df[list(OHLCV)].astype("float64")
    checked = validate_ohlcv(base, source="env", symbol=symbol)
    if "tradable" in df.columns:  # an explicit flag may only make bars *less* tradable
        checked["tradable"] = checked["tradable"].to_numpy() & df["tradable"].to_numpy(bool)
    if "prev_close" in df.columns:
        prev = pd.to_numeric(df["prev_close"], errors="coerce").to_numpy(np.float64)
        bad = ~(np.isnan(prev) | (prev > 0))
        if bad.any():
            day = df.index[int(np.argmax(bad))]
            raise DataError(
                f"[env, symbol={symbol}] column prev_close must be > 0 (or empty), got "
                f"{prev[bad][0]!r} on {pd.Timestamp(day).date()}"
            )
        checked["prev_close"] = prev
    return checked


def _feature_block(frame: pd.DataFrame, symbols: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Normalise a feature frame to MultiIndex (symbol, feature) columns."""
    if isinstance(frame.columns, pd.MultiIndex):
        missing = [s for s in symbols if s not in frame.columns.get_level_values(0)]
        if missing:
            raise DataError(f"[env] feature frame has no columns for symbol(s) {missing}")
        names = list(dict.fromkeys(frame[symbols[0]].columns))
        return frame, [str(n) for n in names]
    if len(symbols) != 1:
        raise DataError(
            "[env] a multi-asset env needs feature columns as a MultiIndex (symbol, feature)"
        )
    names = [str(c) for c in frame.columns]
    return pd.concat({symbols[0]: frame}, axis=1), names


def build_market(
    prices: pd.DataFrame,
    *,
    features: Sequence[str] | None,
    extra_features: pd.DataFrame | None,
    scaler=None,
) -> MarketArrays:
    """Validate prices, compute features, apply a fitted scaler, join extras.

    ``scaler`` (e.g. :class:`stockgym.data.FeatureScaler`) must have been fitted by the
    caller on ``build_features(train_prices, features)``; it is applied to the built
    features only, never to ``extra_features`` (scale those yourself)."""
    from stockgym.data.features import DEFAULT_FEATURES, build_features

    per_symbol = {s: _checked(s, df) for s, df in split_symbols(prices).items()}
    symbols = list(per_symbol)
    base_index = next(iter(per_symbol.values())).index
    for s, df in per_symbol.items():
        if not df.index.equals(base_index):
            raise DataError(f"[env] symbol {s} is not aligned on the same dates as {symbols[0]}")
    blocks = []
    names: list[str] = []
    if features is None or len(features) > 0:
        names_req = list(DEFAULT_FEATURES if features is None else features)
        # Same shape as the caller's frame, so a scaler fit on build_features(prices)
        # matches the columns built here.
        if isinstance(prices.columns, pd.MultiIndex):
            feat_input = pd.concat(per_symbol, axis=1, names=["symbol", "field"])
        else:
            feat_input = per_symbol[symbols[0]]
            feat_input.attrs["symbols"] = symbols
        built = build_features(feat_input, names_req)
        if scaler is not None:  # fitted by the caller on build_features output (same shape)
            built = scaler.transform(built)
        feats, f_names = _feature_block(built, symbols)
        blocks.append(feats)
        names += f_names
    if extra_features is not None:
        extra, e_names = _feature_block(extra_features, symbols)
        if not isinstance(extra.index, pd.DatetimeIndex):
            raise DataError("[env] extra_features needs a DatetimeIndex of dates")
        blocks.append(extra)
        names += e_names
    if not blocks:
        raise DataError("[env] no features: pass feature names or extra_features")
    table = pd.concat(blocks, axis=1, join="inner") if len(blocks) > 1 else blocks[0]
    table = table.dropna(how="any")
    dates = table.index.intersection(base_index)
    if len(dates) < 2:
        raise DataError(f"[env] only {len(dates)} dates with prices and every feature")
    cube = np.stack([table.loc[dates, s][names].to_numpy(np.float64) for s in symbols], axis=1)
    if not np.isfinite(cube).all():
        t, i, f = np.argwhere(~np.isfinite(cube))[0]
        raise DataError(
            f"[env] feature {names[f]!r} of {symbols[i]} is {cube[t, i, f]} on {dates[t].date()}"
        )
    ref_open, mark, tradable, bars = _price_arrays(per_symbol, symbols, base_index, dates)
    return MarketArrays(
        dates=dates,
        symbols=symbols,
        feature_names=names,
        ref_open=ref_open,
        mark=mark,
        tradable=tradable,
        features=np.ascontiguousarray(cube, dtype=np.float32),
        **bars,
    )


def _price_arrays(per_symbol, symbols, base_index, dates):
    full_close = np.stack([per_symbol[s]["close"].to_numpy() for s in symbols], axis=1)
    full_open = np.stack([per_symbol[s]["open"].to_numpy() for s in symbols], axis=1)
    full_trad = np.stack([per_symbol[s]["tradable"].to_numpy(bool) for s in symbols], axis=1)
    # Valuation close: the last tradable close, carried forward (a trailing operation).
    mark = pd.DataFrame(np.where(full_trad, full_close, np.nan)).ffill().to_numpy()
    prev_mark = np.vstack([np.full((1, len(symbols)), np.nan), mark[:-1]])
    ref_open = np.where(full_trad, full_open, prev_mark)
    pos = base_index.get_indexer(dates)
    bars = {
        f: np.stack([per_symbol[s][f].to_numpy(np.float64) for s in symbols], axis=1)[pos]
        for f in ("open", "high", "low", "close", "volume")
    }
    prev = prev_mark
    for i, s in enumerate(symbols):
        if "prev_close" in per_symbol[s].columns:
            given = per_symbol[s]["prev_close"].to_numpy(np.float64)
            prev[:, i] = np.where(np.isnan(given), prev[:, i], given)
    bars["prev_close"] = np.ascontiguousarray(prev[pos])
    mark, ref_open, trad = mark[pos], ref_open[pos], full_trad[pos]
    if not np.isfinite(mark[0]).all():
        i = int(np.argmax(~np.isfinite(mark[0])))
        raise DataError(f"[env] {symbols[i]} has no tradable close on or before {dates[0].date()}")
    return np.ascontiguousarray(ref_open), np.ascontiguousarray(mark), trad, bars
