"""build_features: hand-computed values, halted bars, warm-up, shapes, no look-ahead."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgym.data import (
    DEFAULT_FEATURES,
    FEATURES,
    DataError,
    LookaheadError,
    build_features,
    check_no_lookahead,
    feature_names,
    load_prices,
)


def frame(closes, volumes=None, tradable=None, start="2020-01-01"):
    closes = np.asarray(closes, dtype="float64")
    n = len(closes)
    volumes = np.full(n, 1000.0) if volumes is None else np.asarray(volumes, dtype="float64")
    tradable = volumes > 0 if tradable is None else np.asarray(tradable, dtype=bool)
    idx = pd.bdate_range(start, periods=n, name="date")
    return pd.DataFrame(
        {
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": volumes,
            "tradable": tradable,
        },
        index=idx,
    )


def synth(symbols=("A", "B", "C"), n_days=150, seed=0):
    return load_prices(list(symbols), source="synthetic", n_days=n_days, seed=seed)


# ------------------------------------------------------------------ hand-computed values


def test_log_return_and_sma_ratio_hand_values():
    f = build_features(frame([10.0, 11.0, 10.5, 12.0]), ["log_return", "sma_ratio_3"])
    assert list(f.columns) == ["log_return", "sma_ratio_3"]
    # warm-up: sma_ratio_3 needs 3 rows -> first kept row is row 2
    assert f.attrs["warmup_dropped"] == 2
    assert f.attrs["first_date"] == "2020-01-03"
    assert f["log_return"].iloc[0] == pytest.approx(math.log(10.5 / 11.0), abs=1e-15)
    assert f["log_return"].iloc[1] == pytest.approx(math.log(12.0 / 10.5), abs=1e-15)
    assert f["sma_ratio_3"].iloc[0] == pytest.approx(10.5 / ((10 + 11 + 10.5) / 3) - 1, abs=1e-15)
    assert f["sma_ratio_3"].iloc[1] == pytest.approx(12.0 / ((11 + 10.5 + 12) / 3) - 1, abs=1e-15)


def test_log_return_n_days():
    f = build_features(frame([10.0, 11.0, 12.0, 15.0]), ["log_return_2"])
    assert list(f.columns) == ["log_return_2"]
    np.testing.assert_allclose(
        f["log_return_2"], [math.log(12 / 10), math.log(15 / 11)], rtol=1e-14
    )


def test_rsi_wilder_hand_values():
    # diffs +1, -1, +2, -1; Wilder N=2 seeded with the mean of the first two changes
    f = build_features(frame([10.0, 11.0, 10.0, 12.0, 11.0]), ["rsi_2"])
    assert f.attrs["warmup_dropped"] == 2
    # row 2: gain 0.5, loss 0.5 -> 0.5
    # row 3: gain 0.5 + (2 - 0.5)/2 = 1.25, loss 0.5 + (0 - 0.5)/2 = 0.25 -> 1.25/1.5
    # row 4: gain 1.25 + (0 - 1.25)/2 = 0.625, loss 0.25 + (1 - 0.25)/2 = 0.625 -> 0.5
    np.testing.assert_allclose(f["rsi_2"], [0.5, 1.25 / 1.5, 0.5], rtol=1e-14)


def test_rsi_bounds_on_monotone_and_flat_series():
    up = build_features(frame(np.arange(1.0, 40.0)), ["rsi"])
    down = build_features(frame(np.arange(40.0, 1.0, -1.0)), ["rsi"])
    flat = build_features(frame(np.full(30, 5.0)), ["rsi"])
    assert list(up.columns) == ["rsi_14"]
    assert (up["rsi_14"] == 1.0).all()
    assert (down["rsi_14"] == 0.0).all()
    assert (flat["rsi_14"] == 0.5).all()


def test_volatility_bollinger_volume_z_hand_values():
    closes = np.array([10.0, 10.5, 10.2, 10.8, 11.0, 10.6])
    vols = np.array([100.0, 300.0, 200.0, 400.0, 250.0, 150.0])
    f = build_features(frame(closes, vols), ["volatility_3", "bollinger_b_3", "volume_z_3"])
    r = np.diff(np.log(closes))
    last = closes[-3:]
    lv = np.log1p(vols[-3:])
    assert f["volatility_3"].iloc[-1] == pytest.approx(np.std(r[-3:], ddof=1), rel=1e-12)
    mean, sd = last.mean(), last.std(ddof=0)
    assert f["bollinger_b_3"].iloc[-1] == pytest.approx(
        (closes[-1] - (mean - 2 * sd)) / (4 * sd), rel=1e-12
    )
    assert f["volume_z_3"].iloc[-1] == pytest.approx(
        (lv[-1] - lv.mean()) / lv.std(ddof=1), rel=1e-12
    )
    # volatility_3 needs 3 returns -> 4 closes -> 3 warm-up rows
    assert f.attrs["warmup_dropped"] == 3


def test_macd_matches_plain_ema_recursion():
    rng = np.random.default_rng(1)
    closes = 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(60)))
    f = build_features(frame(closes), ["macd", "macd_signal"])

    def ema(x, span):
        a, out = 2 / (span + 1), [x[0]]
        for v in x[1:]:
            out.append(out[-1] + a * (v - out[-1]))
        return np.array(out)

    macd = (ema(closes, 12) - ema(closes, 26)) / closes
    signal = ema(macd[25:], 9)  # macd is valid from row 25; its EMA starts there
    assert f.attrs["warmup_dropped"] == 25 + 8
    np.testing.assert_allclose(f["macd"], macd[33:], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(f["macd_signal"], signal[8:], rtol=1e-10, atol=1e-15)


def test_flat_prices_and_volume_give_finite_values():
    f = build_features(frame(np.full(40, 7.0)), list(FEATURES))
    assert np.isfinite(f.to_numpy()).all()
    assert (f["bollinger_b_20"] == 0.5).all()
    assert (f["volume_z_20"] == 0.0).all()
    assert (f["log_return"] == 0.0).all()


def test_features_are_scale_free():
    closes = 20 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.02, 80)))
    a = build_features(frame(closes), list(FEATURES))
    b = build_features(frame(closes * 1000.0), list(FEATURES))
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- halted bars


def test_halted_bar_valued_at_last_close():
    closes = [10.0, 11.0, 0.0, 12.1, 12.0]  # bar 2 halted: raw close 0, volume 0
    vols = [100.0, 100.0, 0.0, 100.0, 100.0]
    f = build_features(frame(closes, vols), ["log_return", "volume_z_2"])
    assert f.attrs["warmup_dropped"] == 1
    r = f["log_return"]
    assert r.iloc[1] == 0.0  # halted day: valuation close unchanged
    assert r.iloc[2] == pytest.approx(math.log(12.1 / 11.0), abs=1e-15)
    assert np.isfinite(f.to_numpy()).all()
    # halted volume 0 -> log1p(0) = 0, a finite negative z-score
    assert f["volume_z_2"].iloc[1] < 0


def test_leading_halted_rows_are_warmup_and_nan_close_is_ignored():
    closes = [np.nan, 0.0, 10.0, 11.0, 12.0]
    vols = [0.0, 0.0, 100.0, 100.0, 100.0]
    f = build_features(frame(closes, vols), ["log_return"])
    assert f.attrs["warmup_dropped"] == 3
    assert f.attrs["first_date"] == str(f.index[0].date())
    assert f["log_return"].iloc[0] == pytest.approx(math.log(1.1), abs=1e-15)


def test_halted_bar_with_nan_close_in_the_middle():
    f = build_features(frame([10.0, 10.0, np.nan, 11.0], [1.0, 1.0, 0.0, 1.0]), ["log_return"])
    assert list(f["log_return"]) == [0.0, 0.0, pytest.approx(math.log(1.1))]


# --------------------------------------------------------------- shapes, names, errors


def test_multi_symbol_shape_and_equal_to_single():
    p = synth()
    f = build_features(p)
    assert f.columns.names == ["symbol", "feature"]
    assert list(f.columns.get_level_values(0).unique()) == ["A", "B", "C"]
    assert list(f["A"].columns) == list(DEFAULT_FEATURES)
    assert f.shape == (150 - f.attrs["warmup_dropped"], 3 * len(DEFAULT_FEATURES))
    assert f.attrs["warmup_dropped"] == 20
    assert (f.dtypes == "float64").all()
    single = build_features(p["B"])
    np.testing.assert_array_equal(f["B"].to_numpy(), single.to_numpy())


def test_warmup_is_the_max_over_symbols():
    p = synth(("A", "B"), n_days=60)
    p.loc[p.index[:10], ("B", "tradable")] = False  # B halted for its first 10 days
    p.loc[p.index[:10], ("B", "volume")] = 0.0
    f = build_features(p, ["sma_ratio_5"])
    assert f.attrs["warmup_dropped"] == 10 + 4
    assert f.index[0] == p.index[14]


def test_unknown_and_duplicate_names():
    p = frame(np.arange(1.0, 50.0))
    with pytest.raises(DataError, match="valid names: .*sma_ratio"):
        build_features(p, ["sma_ratio", "momentum"])
    with pytest.raises(DataError, match="same"):
        build_features(p, ["rsi", "rsi_14"])
    with pytest.raises(DataError, match="window"):
        build_features(p, ["volatility_1"])
    with pytest.raises(DataError, match="unknown"):
        build_features(p, ["macd_5"])
    assert feature_names(["rsi", "sma_ratio_50", "log_return_1"]) == [
        "rsi_14",
        "sma_ratio_50",
        "log_return",
    ]


def test_too_short_frame_is_a_clear_error():
    with pytest.raises(DataError, match="no rows left after the warm-up"):
        build_features(frame(np.arange(1.0, 10.0)), ["sma_ratio_20"])


def test_sample_data_all_features():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = load_prices(["AAPL", "MSFT", "GOOG", "IBM"], source="sample")
    f = build_features(p, list(FEATURES))
    assert np.isfinite(f.to_numpy()).all()
    assert f.attrs["symbols"] == ["AAPL", "MSFT", "GOOG", "IBM"]
    check_no_lookahead(build_features, p, n_trials=3)


# ---------------------------------------------------------------------- no look-ahead


def _perturb_future(p: pd.DataFrame, t_pos: int, seed: int) -> pd.DataFrame:
    """Scale every bar after row t_pos (OHLC by one factor, volume by another) and flip
    some future tradable flags."""
    rng = np.random.default_rng(seed)
    q = p.copy()
    n_after = len(p) - t_pos - 1
    for sym in p.columns.get_level_values(0).unique():
        fp = np.exp(rng.uniform(-1, 1, n_after))
        fv = np.exp(rng.uniform(-1, 1, n_after))
        for field in ("open", "high", "low", "close"):
            q.loc[q.index[t_pos + 1 :], (sym, field)] = p[sym][field].to_numpy()[t_pos + 1 :] * fp
        q.loc[q.index[t_pos + 1 :], (sym, "volume")] = p[sym]["volume"].to_numpy()[t_pos + 1 :] * fv
        flip = rng.random(n_after) < 0.1
        trad = p[sym]["tradable"].to_numpy().copy()
        trad[t_pos + 1 :] ^= flip
        q[(sym, "tradable")] = trad
    return q


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t_frac=st.floats(0.0, 0.95),
    n_sym=st.integers(1, 3),
    halts=st.lists(st.integers(0, 119), max_size=8),
)
def test_build_features_ignores_the_future(seed, t_frac, n_sym, halts):
    p = synth(tuple("ABC"[:n_sym]), n_days=120, seed=seed)
    for i, pos in enumerate(halts):  # inject halted bars (raw close 0, volume 0)
        sym = "ABC"[i % n_sym]
        p.loc[p.index[pos], (sym, "tradable")] = False
        p.loc[p.index[pos], (sym, "volume")] = 0.0
        p.loc[p.index[pos], (sym, "close")] = 0.0
    t_pos = int(t_frac * (len(p) - 1))
    t = p.index[t_pos]
    names = [*FEATURES, "log_return_3", "sma_ratio_7"]
    a = build_features(p, names)
    b = build_features(_perturb_future(p, t_pos, seed + 1), names)
    a_past, b_past = a.loc[:t], b.loc[:t]
    assert a_past.index.equals(b_past.index)
    np.testing.assert_array_equal(a_past.to_numpy(), b_past.to_numpy())
    if not a_past.empty:
        assert a.attrs["warmup_dropped"] == b.attrs["warmup_dropped"]


# ------------------------------------------------------------------ check_no_lookahead


def _close(p):
    return p.xs("close", axis=1, level="field")


@pytest.mark.parametrize(
    "leaky",
    [
        lambda p: _close(p).shift(-1),
        lambda p: _close(p).rolling(5, center=True).mean(),
        lambda p: _close(p).rolling(10).mean().bfill(),
        lambda p: (_close(p) - _close(p).mean()) / _close(p).std(),
        lambda p: _close(p).pct_change().fillna(_close(p).pct_change().mean()),
    ],
    ids=["shift-1", "centered", "bfill", "whole-series-zscore", "fill-with-future-mean"],
)
def test_check_no_lookahead_catches_leaks(leaky):
    with pytest.raises(LookaheadError, match=r"output on \d{4}-\d\d-\d\d, column"):
        check_no_lookahead(leaky, synth(n_days=80))


def test_check_no_lookahead_names_date_and_column():
    p = synth(n_days=60)
    t = p.index[30]
    with pytest.raises(LookaheadError) as err:
        check_no_lookahead(lambda q: _close(q).shift(-1), p, dates=[t])
    assert str(t.date()) in str(err.value) and "'A'" in str(err.value)


def test_check_no_lookahead_passes_ours_single_and_multi():
    p = synth(n_days=100)
    check_no_lookahead(build_features, p)
    check_no_lookahead(lambda q: build_features(q, list(FEATURES)), p["A"], n_trials=4)
    check_no_lookahead(lambda q: q["close"].rolling(3).mean(), p["B"])  # Series output


def test_check_no_lookahead_single_symbol_leak_and_bad_outputs():
    p = synth(n_days=50)["A"]
    with pytest.raises(LookaheadError):
        check_no_lookahead(lambda q: q["close"].shift(-2), p)
    with pytest.raises(TypeError, match="DataFrame or Series"):
        check_no_lookahead(lambda q: q["close"].to_numpy(), p)
    rng = np.random.default_rng(0)
    with pytest.raises(LookaheadError, match="non-deterministic"):
        check_no_lookahead(lambda q: q["close"] * rng.random(), p)
