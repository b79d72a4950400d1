"""split / walk_forward: chronological, non-overlapping, dates-only boundaries."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgym.data import DataError, load_prices, split, walk_forward


def prices(n_days=100, seed=0):
    return load_prices(["A", "B"], source="synthetic", n_days=n_days, seed=seed)


def check_parts(s, n):
    parts = [s.train, s.valid, s.test]
    assert sum(len(x) for x in parts) <= n
    for earlier, later in zip(parts, parts[1:], strict=False):
        assert earlier.index.max() < later.index.min()  # chronological, no overlap
    for x in parts:
        assert x.index.is_monotonic_increasing and len(x) > 0


def test_default_is_20_percent_test_then_20_percent_of_rest():
    p = prices(100)
    s = split(p)
    assert (len(s.train), len(s.valid), len(s.test)) == (64, 16, 20)
    check_parts(s, 100)
    assert s.test.index[-1] == p.index[-1] and s.train.index[0] == p.index[0]
    assert s.dates["test"] == {
        "first": str(p.index[80].date()),
        "last": str(p.index[99].date()),
        "rows": 20,
    }
    json.dumps(s.dates)  # JSON-able for run configs
    assert s.train.columns.equals(p.columns)
    train, valid, test = s  # unpacks
    assert test is s.test


def test_default_rounding_on_odd_length():
    s = split(prices(1000)["A"].iloc[:257])
    assert (len(s.train), len(s.valid), len(s.test)) == (165, 41, 51)


def test_fractions():
    s = split(prices(100), fractions=(0.6, 0.2, 0.2))
    assert (len(s.train), len(s.valid), len(s.test)) == (60, 20, 20)
    with pytest.raises(DataError, match="sum to 1"):
        split(prices(100), fractions=(0.6, 0.3, 0.2))
    with pytest.raises(DataError, match="positive"):
        split(prices(100), fractions=(0.8, 0.2, 0.0))
    with pytest.raises(DataError, match="either fractions or dates"):
        split(prices(100), train="2010-02-01", fractions=(0.6, 0.2, 0.2))


def test_end_dates_each_part_starts_after_previous():
    p = prices(100)  # business days from 2010-01-04
    s = split(p, train="2010-02-12", valid="2010-03-31")
    assert s.train.index[-1] == pd.Timestamp("2010-02-12")
    assert s.valid.index[0] == pd.Timestamp("2010-02-15")
    assert s.valid.index[-1] == pd.Timestamp("2010-03-31")
    assert s.test.index[0] == pd.Timestamp("2010-04-01") and s.test.index[-1] == p.index[-1]
    check_parts(s, 100)


def test_start_end_tuples_with_gaps_and_open_ends():
    p = prices(100)
    s = split(
        p, train=(None, "2010-02-12"), valid=("2010-02-22", None), test=("2010-04-01", "2010-04-30")
    )
    assert s.valid.index[0] == pd.Timestamp("2010-02-22")
    assert s.valid.index[-1] == pd.Timestamp("2010-03-31")  # just before test starts
    assert s.test.index[-1] == pd.Timestamp("2010-04-30")
    check_parts(s, 100)


def test_bad_dates():
    p = prices(100)
    with pytest.raises(DataError, match="overlap"):
        split(p, train="2010-03-01", valid=("2010-02-01", "2010-03-31"))
    with pytest.raises(DataError, match="'valid' part is empty"):
        split(p, train="2010-02-12", valid="2010-02-13")  # a weekend: no dates
    with pytest.raises(DataError, match="'test' part is empty"):
        split(p, train="2010-02-12", valid="2011-12-31")
    with pytest.raises(DataError, match="where 'valid' ends"):
        split(p, train="2010-02-12")
    with pytest.raises(DataError, match="not a date"):
        split(p, train="soon", valid="2010-03-31")
    with pytest.raises(DataError, match="empty"):
        split(prices(100).iloc[:2])


def test_walk_forward_expanding_vs_rolling():
    p = prices(100)
    exp = list(walk_forward(p, 4, test_size=10))
    assert [len(f.train) for f in exp] == [60, 70, 80, 90]
    assert [len(f.test) for f in exp] == [10] * 4
    assert exp[-1].test[-1] == p.index[-1]
    roll = list(walk_forward(p.index, 4, test_size=10, mode="rolling", train_size=30, gap=5))
    assert [len(f.train) for f in roll] == [30] * 4
    for f in exp + roll:
        assert f.train.max() < f.test.min()
    assert roll[0].train[-1] == p.index[54] and roll[0].test[0] == p.index[60]  # 5-row gap
    tests = [f.test for f in exp]
    for a, b in zip(tests, tests[1:], strict=False):
        assert a[-1] < b[0]  # time order
    tr, te = exp[0].select(p)
    assert len(tr) == 60 and te.index.equals(exp[0].test)
    assert exp[1].dates["train"]["rows"] == 70
    default_roll = [len(f.train) for f in walk_forward(p, 3, test_size=10, mode="rolling")]
    assert default_roll == [70, 70, 70]


def test_walk_forward_errors():
    p = prices(50)
    with pytest.raises(DataError, match="too few"):
        walk_forward(p, 5, test_size=10)
    with pytest.raises(DataError, match="too few"):
        walk_forward(p, 2, test_size=10, mode="rolling", train_size=40)
    with pytest.raises(DataError, match="mode"):
        walk_forward(p, 2, test_size=10, mode="sliding")
    with pytest.raises(DataError, match="test_size"):
        walk_forward(p, 2, test_size=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t_frac=st.floats(0.0, 0.99),
    n_days=st.integers(20, 200),
    n_folds=st.integers(1, 4),
)
def test_boundaries_depend_only_on_dates(seed, t_frac, n_days, n_folds):
    p = prices(n_days, seed=seed)
    t_pos = int(t_frac * (n_days - 1))
    q = p.copy()
    rng = np.random.default_rng(seed)
    for sym in ("A", "B"):
        for field in ("open", "high", "low", "close", "volume"):
            vals = q[(sym, field)].to_numpy().copy()
            vals[t_pos + 1 :] *= rng.uniform(0.1, 10, n_days - t_pos - 1)
            q[(sym, field)] = vals
    a, b = split(p), split(q)
    assert a.dates == b.dates
    t = p.index[t_pos]
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x.loc[:t], y.loc[:t], check_exact=True)
    test_size = max(1, n_days // (2 * n_folds))
    fa = list(walk_forward(p, n_folds, test_size=test_size, mode="rolling", gap=1))
    fb = list(walk_forward(q, n_folds, test_size=test_size, mode="rolling", gap=1))
    assert [
        (f.train.equals(g.train), f.test.equals(g.test)) for f, g in zip(fa, fb, strict=True)
    ] == [(True, True)] * n_folds
    assert all(f.train.max() < f.test.min() for f in fa)
