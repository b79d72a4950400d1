"""FeatureScaler: fit on the train period only, JSON round-trip, column checks."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgym import core as atomic_mod
from stockgym.data import DataError, FeatureScaler, build_features, load_prices, split


def features(n_days=200, seed=0, symbols=("A", "B")):
    p = load_prices(list(symbols), source="synthetic", n_days=n_days, seed=seed)
    return build_features(p)


def flat_features():
    idx = pd.bdate_range("2021-01-01", periods=10, name="date")
    return pd.DataFrame({"x": np.arange(10.0), "y": np.arange(10.0) ** 2}, index=idx)


def bits(frame: pd.DataFrame) -> np.ndarray:
    return frame.to_numpy(dtype="float64").view("int64")


@pytest.mark.parametrize("kind", ["standard", "minmax", "robust"])
def test_fit_uses_only_rows_up_to_end(kind):
    f = flat_features()
    end = f.index[4]
    s = FeatureScaler(kind).fit(f, end=end)
    assert (s.fit_start, s.fit_end, s.n_rows) == (str(f.index[0].date()), str(end.date()), 5)
    ref = FeatureScaler(kind).fit(f.iloc[:5])
    np.testing.assert_array_equal(bits(s.transform(f)), bits(ref.transform(f)))
    # changing rows after end changes nothing
    g = f.copy()
    g.iloc[5:] = 1e6
    np.testing.assert_array_equal(
        bits(FeatureScaler(kind).fit(g, end=end).transform(f)), bits(s.transform(f))
    )


def test_hand_values_standard_and_minmax():
    f = flat_features()
    z = FeatureScaler("standard").fit(f, end=f.index[3]).transform(f)
    x = np.arange(4.0)
    assert z["x"].iloc[3] == pytest.approx((3 - x.mean()) / x.std(ddof=0))
    m = FeatureScaler("minmax").fit(f, end=f.index[4]).transform(f)
    assert m["x"].iloc[:5].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert m["x"].iloc[9] == pytest.approx(9 / 4)  # after the fit period: outside [0, 1]
    r = FeatureScaler("robust").fit(f).transform(f)
    assert r["x"].iloc[0] == pytest.approx((0 - 4.5) / (6.75 - 2.25))


@pytest.mark.parametrize("kind", ["standard", "minmax", "robust"])
def test_json_round_trip_bit_identical_and_no_pickle(kind, tmp_path):
    f = features()
    s = FeatureScaler(kind).fit(f, end=f.index[100])
    path = s.save(tmp_path / "sub" / "scaler.json")
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80")  # a pickle starts with the PROTO opcode
    state = json.loads(raw)  # plain JSON
    assert state["kind"] == kind and state["fit_end"] == str(f.index[100].date())
    assert state["columns"][0] == ["A", "log_return"]
    loaded = FeatureScaler.load(path)
    assert (loaded.fit_start, loaded.fit_end, loaded.columns) == (s.fit_start, s.fit_end, s.columns)
    a, b = s.transform(f), loaded.transform(f)
    assert a.columns.equals(f.columns) and a.index.equals(f.index)
    np.testing.assert_array_equal(bits(a), bits(b))
    assert sorted(os.listdir(path.parent)) == ["scaler.json"]  # no temp file left


def test_save_is_atomic(tmp_path, monkeypatch):
    f = flat_features()
    path = tmp_path / "s.json"
    FeatureScaler().fit(f, end=f.index[2]).save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        FeatureScaler().fit(f).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.json"]


def test_column_mismatch_names_the_columns():
    f = flat_features()
    s = FeatureScaler().fit(f)
    with pytest.raises(DataError, match=r"missing \['y'\], unexpected \['z'\]"):
        s.transform(f.rename(columns={"y": "z"}))
    with pytest.raises(DataError, match="missing"):
        s.transform(f[["x"]])
    # same columns in another order: matched by label
    out = s.transform(f[["y", "x"]])
    assert list(out.columns) == ["y", "x"]
    np.testing.assert_array_equal(out["x"].to_numpy(), s.transform(f)["x"].to_numpy())


def test_unfitted_empty_and_bad_input():
    f = flat_features()
    with pytest.raises(DataError, match="not fitted"):
        FeatureScaler().transform(f)
    with pytest.raises(DataError, match="no rows"):
        FeatureScaler().fit(f, end="2000-01-01")
    with pytest.raises(DataError, match="unknown scaler kind"):
        FeatureScaler("zscore")
    g = f.copy()
    g.iloc[2, 0] = np.inf
    with pytest.raises(DataError, match="infinite value in column 'x'"):
        FeatureScaler().fit(g)


def test_options_round_trip(tmp_path):
    f = flat_features()
    s = FeatureScaler("minmax", feature_range=(-1, 1)).fit(f)
    assert s.transform(f)["x"].iloc[0] == -1.0
    loaded = FeatureScaler.load(s.save(tmp_path / "m.json"))
    np.testing.assert_array_equal(bits(loaded.transform(f)), bits(s.transform(f)))


def test_fit_on_train_split():
    """Min-max fit on the train split maps it onto [0, 1], up to float rounding.

    scikit-learn computes ``x * s + m`` with ``s = 1 / (hi - lo)`` and ``m = -lo * s``
    (each rounded), not ``(x - lo) / (hi - lo)``. At ``x = lo`` the two rounded products
    cancel exactly (0.0). Elsewhere the range, its reciprocal, the two products and the sum
    are each rounded (relative error <= eps / 2 each) on terms no larger than
    ``(|x| + |lo|) / (hi - lo)``, so the result differs from the exact value by at most
    ``2 eps (|x| + |lo|) / (hi - lo)``; we allow twice that. The exact value is computed
    with ``fractions.Fraction`` from the float inputs.
    """
    f = features(n_days=300)
    parts = split(f)
    s = FeatureScaler("minmax").fit(f, end=parts.dates["train"]["last"])
    assert s.fit_end == parts.dates["train"]["last"] and s.n_rows == len(parts.train)
    x = parts.train.to_numpy(dtype="float64")
    lo, hi = x.min(axis=0), x.max(axis=0)
    # the fitted range is the train split's, bit for bit (no row after the train end)
    np.testing.assert_array_equal(s._scaler.data_min_, lo)
    np.testing.assert_array_equal(s._scaler.data_max_, hi)
    t = s.transform(parts.train).to_numpy()
    assert (t.min(axis=0) == 0.0).all()  # exact: the two products cancel at x = lo
    eps = np.finfo(np.float64).eps
    bound = 4 * eps * (np.abs(x) + np.abs(lo)) / (hi - lo)
    exact = np.array(
        [
            [
                float((Fraction(v) - Fraction(a)) / (Fraction(b) - Fraction(a)))
                for v, a, b in zip(row, lo, hi, strict=True)
            ]
            for row in x
        ]
    )
    assert (np.abs(t - exact) <= bound).all(), np.abs(t - exact).max()
    top = t[x.argmax(axis=0), np.arange(x.shape[1])]
    assert (np.abs(top - 1.0) <= bound.max(axis=0)).all(), top - 1.0
    assert bound.max() < 1e-14  # these features are well conditioned: a few ulps of 1


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t_frac=st.floats(0.1, 0.95),
    end_frac=st.floats(0.0, 1.0),
    kind=st.sampled_from(["standard", "minmax", "robust"]),
)
def test_scaled_features_ignore_the_future(seed, t_frac, end_frac, kind):
    f = features(n_days=120, seed=seed)
    t_pos = int(t_frac * (len(f) - 1))
    end = f.index[int(end_frac * t_pos)]  # fit period ends on or before t
    g = f.copy()
    rng = np.random.default_rng(seed)
    g.iloc[t_pos + 1 :] = g.iloc[t_pos + 1 :] * rng.uniform(-3, 3, g.iloc[t_pos + 1 :].shape)
    a = FeatureScaler(kind).fit_transform(f, end=end).iloc[: t_pos + 1]
    b = FeatureScaler(kind).fit_transform(g, end=end).iloc[: t_pos + 1]
    np.testing.assert_array_equal(bits(a), bits(b))
