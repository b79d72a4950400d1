"""Tests of ``stockgym.data.load_prices`` for the csv, sample and synthetic sources (all
offline, fast); the validation rules every source goes through are in
test_load_prices_validation.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from price_files import (
    FIELDS,
    GOOD_ROWS,
    HEADER,
    SAMPLE_DIR,
    assert_tidy,
    load_csv,
    log_returns,
    rows_csv,
    where,
    write_csv,
)

from stockgym.data import AlignmentWarning, DataError, load_prices, sample_symbols

# --------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return load_prices("AAPL", source="sample")


@pytest.fixture(scope="module")
def aapl_raw() -> pd.DataFrame:
    return load_prices("AAPL", source="sample", adjust=False)


def test_sample_symbols_have_enough_history():
    syms = sample_symbols()
    assert syms == sorted(syms)
    assert {"AAPL", "MSFT"} <= set(syms)
    assert len(syms) >= 2
    for sym in syms:
        df = load_prices(sym, source="sample")
        assert len(df) >= 2000, sym


def test_sample_frame_shape_and_dtypes(aapl):
    assert list(aapl.columns) == FIELDS
    assert_tidy(aapl)
    for col in ["open", "high", "low", "close", "volume"]:
        assert aapl[col].dtype == np.float64, col
    assert aapl["tradable"].dtype == np.bool_
    assert len(aapl) == 3270
    assert aapl.index[0] == pd.Timestamp("2000-03-01")
    assert aapl.index[-1] == pd.Timestamp("2013-03-01")
    assert aapl.attrs["source"] == "sample"
    assert aapl.attrs["symbols"] == ["AAPL"]
    assert aapl.attrs["adjusted"] is True
    assert aapl.attrs["repairs"] == []


@pytest.mark.parametrize("sym", ["AAPL", "GOOG", "IBM", "MSFT"])
def test_sample_adjusted_ohlc_consistent(sym):
    assert sym in sample_symbols()
    df = load_prices(sym, source="sample")
    assert df["tradable"].all()
    assert (df[["open", "high", "low", "close"]] > 0).all().all()
    assert (df["high"] >= np.maximum(df["open"], df["close"]) * (1 - 1e-9)).all()
    assert (df["low"] <= np.minimum(df["open"], df["close"]) * (1 + 1e-9)).all()


SPLITS = [("AAPL", "2000-06-21"), ("AAPL", "2005-02-28"), ("MSFT", "2003-02-18")]


@pytest.mark.parametrize("sym,day", SPLITS)
def test_sample_split_days_adjusted_vs_raw(sym, day):
    adj = load_prices(sym, source="sample")
    raw = load_prices(sym, source="sample", adjust=False)
    day = pd.Timestamp(day)
    i = adj.index.get_loc(day)
    prev = adj.index[i - 1]
    # raw: a 2:1 split looks like a ~50% overnight crash (close-to-open and close-to-close)
    assert raw.loc[day, "open"] / raw.loc[prev, "close"] < 0.6
    assert raw.loc[day, "close"] / raw.loc[prev, "close"] < 0.6
    # adjusted: an ordinary day
    assert 0.85 < adj.loc[day, "open"] / adj.loc[prev, "close"] < 1.15
    assert 0.85 < adj.loc[day, "close"] / adj.loc[prev, "close"] < 1.15
    # and the adjusted series has no split-sized move anywhere near that day
    window = adj.loc[day - pd.Timedelta(days=10) : day + pd.Timedelta(days=10), "close"]
    assert log_returns(window).abs().max() < 0.2
    assert raw.attrs["adjusted"] is False
    assert adj.attrs["adjusted"] is True


def test_sample_adjusted_close_equals_source_adj_close(aapl, aapl_raw):
    src = pd.read_csv(SAMPLE_DIR / "AAPL.csv.gz", parse_dates=["Date"]).set_index("Date")
    assert len(src) == len(aapl)
    np.testing.assert_allclose(aapl["close"].to_numpy(), src["Adj Close"].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(aapl_raw["close"].to_numpy(), src["Close"].to_numpy())
    np.testing.assert_array_equal(aapl_raw["open"].to_numpy(), src["Open"].to_numpy())
    np.testing.assert_array_equal(aapl_raw["volume"].to_numpy(), src["Volume"].to_numpy())
    factor = src["Adj Close"].to_numpy() / src["Close"].to_numpy()
    for col, scol in [("open", "Open"), ("high", "High"), ("low", "Low")]:
        np.testing.assert_allclose(aapl[col].to_numpy(), src[scol].to_numpy() * factor, rtol=1e-12)
    np.testing.assert_allclose(aapl["volume"].to_numpy(), src["Volume"].to_numpy() / factor)


def test_sample_start_end_inclusive():
    df = load_prices("AAPL", start="2005-02-28", end="2005-03-02", source="sample")
    assert list(df.index) == list(pd.to_datetime(["2005-02-28", "2005-03-01", "2005-03-02"]))
    # bounds on non-trading days (a weekend) select the trading days inside
    df = load_prices("AAPL", start="2005-02-26", end="2005-03-06", source="sample")
    assert df.index[0] == pd.Timestamp("2005-02-28")
    assert df.index[-1] == pd.Timestamp("2005-03-04")
    assert len(df) == 5
    # Timestamp bounds and open-ended ranges
    df = load_prices("AAPL", start=pd.Timestamp("2013-02-27"), source="sample")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2013-02-27", "2013-02-28", "2013-03-01"]
    df = load_prices("AAPL", end="2000-03-02", source="sample")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2000-03-01", "2000-03-02"]


def test_sample_slice_equals_full_frame_slice(aapl):
    df = load_prices("AAPL", start="2004-01-01", end="2004-12-31", source="sample")
    pd.testing.assert_frame_equal(df, aapl.loc["2004-01-01":"2004-12-31"], check_exact=True)


def test_unknown_sample_symbol_lists_available():
    with pytest.raises(DataError, match=r"unknown sample symbol 'NOPE'.*AAPL.*MSFT"):
        load_prices("NOPE", source="sample")


def test_sample_frame_is_fresh_each_call():
    a = load_prices("MSFT", source="sample")
    a.iloc[0, 0] = -1.0
    b = load_prices("MSFT", source="sample")
    assert b.iloc[0, 0] > 0


# --------------------------------------------------------------------------- multi-symbol


def test_multi_symbol_multiindex_and_alignment():
    with pytest.warns(AlignmentWarning, match=r"AAPL: 1122 \(2000-03-01\.\.2004-08-18\)"):
        prices = load_prices(["AAPL", "GOOG"], source="sample")
    assert isinstance(prices.columns, pd.MultiIndex)
    assert list(prices.columns.names) == ["symbol", "field"]
    assert list(prices.columns.get_level_values("symbol").unique()) == ["AAPL", "GOOG"]
    for sym in ["AAPL", "GOOG"]:
        assert list(prices[sym].columns) == FIELDS
    assert_tidy(prices)
    goog = load_prices("GOOG", source="sample")
    assert prices.index.equals(goog.index)  # GOOG's dates are all inside AAPL's
    assert prices.attrs["dropped"] == {
        "AAPL": {"dropped": 1122, "first": "2000-03-01", "last": "2004-08-18"}
    }
    assert prices.attrs["symbols"] == ["AAPL", "GOOG"]
    assert prices.attrs["source"] == "sample"
    assert prices.attrs["adjusted"] is True


def test_multi_symbol_sub_frame_equals_single_load():
    with pytest.warns(AlignmentWarning):
        prices = load_prices(["AAPL", "GOOG"], source="sample")
    for sym in ["AAPL", "GOOG"]:
        single = load_prices(sym, source="sample")
        expected = single.loc[prices.index].rename_axis(columns="field")
        pd.testing.assert_frame_equal(prices[sym], expected, check_exact=True)


def test_multi_symbol_no_warning_when_dates_match():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices = load_prices(["AAPL", "MSFT", "IBM"], source="sample")
    assert prices.attrs["dropped"] == {}
    assert len(prices) == 3270
    assert list(prices.columns.get_level_values("symbol").unique()) == ["AAPL", "MSFT", "IBM"]


def test_multi_symbol_warning_points_at_caller():
    with pytest.warns(AlignmentWarning) as rec:
        load_prices(["GOOG", "AAPL"], source="sample")
    assert Path(rec[0].filename).name == Path(__file__).name


def test_multi_symbol_csv_alignment_reports_both_sides(tmp_path):
    a = rows_csv(tmp_path, GOOD_ROWS, name="a.csv")
    b = rows_csv(
        tmp_path,
        GOOD_ROWS[1:] + ["2020-01-07,11,12,10.5,11.5,100", "2020-01-08,11,12,10.5,11.5,100"],
        name="b.csv",
    )
    with pytest.warns(AlignmentWarning) as rec:
        prices = load_prices([str(a), str(b)], source="csv")
    msg = str(rec[0].message)
    assert "2020-01-02" in msg and "2020-01-07..2020-01-08" in msg
    assert list(prices.index.strftime("%Y-%m-%d")) == ["2020-01-03", "2020-01-06"]
    # no symbol silently dropped
    assert list(prices.columns.get_level_values("symbol").unique()) == [str(a), str(b)]
    assert prices.attrs["dropped"] == {
        str(a): {"dropped": 1, "first": "2020-01-02", "last": "2020-01-02"},
        str(b): {"dropped": 2, "first": "2020-01-07", "last": "2020-01-08"},
    }


def test_multi_symbol_disjoint_dates_raise_instead_of_dropping(tmp_path):
    a = rows_csv(tmp_path, GOOD_ROWS[:1], name="a.csv")
    b = rows_csv(tmp_path, GOOD_ROWS[2:], name="b.csv")
    with pytest.raises(DataError, match=r"share no common date.*2020-01-02.*2020-01-06"):
        load_prices([str(a), str(b)], source="csv")


def test_list_of_one_symbol_keeps_multiindex():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices = load_prices(["MSFT"], source="sample")
    single = load_prices("MSFT", source="sample")
    assert isinstance(prices.columns, pd.MultiIndex)
    assert list(prices.columns.names) == ["symbol", "field"]
    assert prices.shape == (len(single), 6)
    pd.testing.assert_frame_equal(
        prices["MSFT"], single.rename_axis(columns="field"), check_exact=True
    )
    assert prices.attrs["dropped"] == {}


def test_duplicate_or_empty_symbol_list():
    with pytest.raises(DataError, match=r"duplicate symbols.*AAPL"):
        load_prices(["AAPL", "AAPL"], source="sample")
    with pytest.raises(DataError, match="no symbols given"):
        load_prices([], source="sample")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_same_seed_identical():
    a = load_prices(["A", "B"], source="synthetic", seed=7, n_days=300)
    b = load_prices(["A", "B"], source="synthetic", seed=7, n_days=300)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = load_prices("A", source="synthetic", seed=7, n_days=300, kind="edge")
    d = load_prices("A", source="synthetic", seed=7, n_days=300, kind="edge")
    pd.testing.assert_frame_equal(c, d, check_exact=True)


def test_synthetic_different_seed_differs():
    a = load_prices(["A", "B"], source="synthetic", seed=1, n_days=300)
    b = load_prices(["A", "B"], source="synthetic", seed=2, n_days=300)
    assert a.index.equals(b.index)
    assert not np.allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float))
    assert not np.allclose(a["A"]["close"], b["A"]["close"])


def test_synthetic_default_seed_is_fixed():
    a = load_prices("X", source="synthetic", n_days=50)
    b = load_prices("X", source="synthetic", n_days=50)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("kind", ["gbm", "edge"])
def test_synthetic_frame_is_valid(kind):
    prices = load_prices(["A", "B", "C"], source="synthetic", seed=3, kind=kind, n_days=2000)
    assert_tidy(prices)
    assert len(prices) == 2000
    assert prices.attrs["dropped"] == {}
    assert prices.index[0] == pd.Timestamp("2010-01-04")
    assert (prices.index.day_of_week < 5).all()
    for sym in ["A", "B", "C"]:
        df = prices[sym]
        assert list(df.columns) == FIELDS
        for col in ["open", "high", "low", "close", "volume"]:
            assert df[col].dtype == np.float64
        assert df["tradable"].dtype == np.bool_ and df["tradable"].all()
        o, h, lo, c = (df[k].to_numpy() for k in ["open", "high", "low", "close"])
        assert (lo > 0).all()
        assert (lo <= np.minimum(o, c)).all()
        assert (h >= np.maximum(o, c)).all()
        assert (df["volume"] > 0).all()
    # symbols are distinct series, correlated as the default corr=0.3 says
    ra, rb = log_returns(prices["A"]["close"]), log_returns(prices["B"]["close"])
    assert not np.allclose(ra, rb)
    assert 0.15 < np.corrcoef(ra, rb)[0, 1] < 0.45


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_edge_autocorrelation(seed):
    edge = load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=5000, seed=seed)
    rho = log_returns(edge["close"]).autocorr(1)
    assert abs(rho - 0.3) < 0.05, rho
    gbm = load_prices("X", source="synthetic", kind="gbm", n_days=5000, seed=seed)
    rho0 = log_returns(gbm["close"]).autocorr(1)
    assert abs(rho0) < 0.05, rho0


def test_synthetic_options_respected():
    df = load_prices("X", source="synthetic", n_days=30, synthetic_start="2021-03-01", seed=0)
    assert len(df) == 30
    assert df.index[0] == pd.Timestamp("2021-03-01")
    df = load_prices(
        "X", source="synthetic", n_days=300, seed=0, start="2010-02-01", end="2010-02-28"
    )
    assert df.index[0] == pd.Timestamp("2010-02-01")
    assert df.index[-1] == pd.Timestamp("2010-02-26")
    assert len(df) == 20


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"kind": "foo"}, r"\[source=synthetic\].*kind.*'foo'"),
        ({"n_days": 1}, r"\[source=synthetic\].*n_days must be >= 2, got 1"),
        ({"corr": 1.0}, r"\[source=synthetic\].*corr"),
        ({"kind": "edge", "edge": 1.5}, r"\[source=synthetic\].*edge"),
    ],
)
def test_synthetic_bad_option_is_data_error(opts, match):
    with pytest.raises(DataError, match=match):
        load_prices("X", source="synthetic", **opts)


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError, match="seeed"):
        load_prices("X", source="synthetic", seeed=1)
    with pytest.raises(TypeError, match="seed"):
        load_prices("AAPL", source="sample", seed=1)


# --------------------------------------------------------------------------- csv


def test_csv_lower_case_headers(tmp_path):
    path = rows_csv(tmp_path, GOOD_ROWS, header="date,open,high,low,close,volume\n")
    df = load_csv(path)
    assert list(df.columns) == FIELDS
    assert_tidy(df)
    assert df.loc["2020-01-03", "close"] == 11.0
    assert df.loc["2020-01-02", "high"] == 11.0
    assert df["tradable"].all()
    assert df.attrs["source"] == "csv"
    assert df.attrs["adjusted"] is False  # no Adj Close column: prices as given


def test_csv_upper_and_mixed_case_headers_give_same_frame(tmp_path):
    lower = load_csv(rows_csv(tmp_path, GOOD_ROWS, "date,open,high,low,close,volume\n", "l.csv"))
    upper = load_csv(rows_csv(tmp_path, GOOD_ROWS, "DATE,OPEN,HIGH,LOW,CLOSE,VOLUME\n", "u.csv"))
    mixed = load_csv(rows_csv(tmp_path, GOOD_ROWS, "dAtE,Open,HIGH,low,ClOsE,Volume\n", "m.csv"))
    pd.testing.assert_frame_equal(lower, upper, check_exact=True)
    pd.testing.assert_frame_equal(lower, mixed, check_exact=True)


def test_csv_column_order_does_not_matter(tmp_path):
    path = rows_csv(
        tmp_path,
        ["100,10.5,9,11,10,2020-01-02", "200,11,10,12,10.5,2020-01-03"],
        header="Volume,Close,Low,High,Open,Date\n",
    )
    df = load_csv(path)
    assert df.loc["2020-01-02"].tolist() == [10.0, 11.0, 9.0, 10.5, 100.0, True]


@pytest.mark.parametrize("header", ["Adj Close", "ADJ CLOSE", "adj_close", "Adj_Close"])
def test_csv_adj_close_used_for_adjustment(tmp_path, header):
    path = rows_csv(
        tmp_path,
        ["2020-01-02,10,11,9,10,100,5", "2020-01-03,20,24,18,22,200,11"],
        header=f"Date,Open,High,Low,Close,Volume,{header}\n",
    )
    adj = load_csv(path)
    assert list(adj.columns) == FIELDS  # adj_close consumed, not returned
    assert adj.attrs["adjusted"] is True
    assert adj.loc["2020-01-02"].tolist() == [5.0, 5.5, 4.5, 5.0, 200.0, True]
    assert adj.loc["2020-01-03"].tolist() == [10.0, 12.0, 9.0, 11.0, 400.0, True]
    raw = load_csv(path, adjust=False)
    assert raw.attrs["adjusted"] is False
    assert list(raw.columns) == FIELDS
    assert raw.loc["2020-01-03"].tolist() == [20.0, 24.0, 18.0, 22.0, 200.0, True]


def test_csv_semicolon_separator(tmp_path):
    comma = load_csv(rows_csv(tmp_path, GOOD_ROWS, name="c.csv"))
    text = HEADER.replace(",", ";") + "\n".join(r.replace(",", ";") for r in GOOD_ROWS) + "\n"
    semi = load_csv(write_csv(tmp_path, text, "s.csv"))
    pd.testing.assert_frame_equal(comma, semi, check_exact=True)


def test_csv_tab_separator(tmp_path):
    comma = load_csv(rows_csv(tmp_path, GOOD_ROWS, name="c.csv"))
    text = HEADER.replace(",", "\t") + "\n".join(r.replace(",", "\t") for r in GOOD_ROWS) + "\n"
    tab = load_csv(write_csv(tmp_path, text, "t.tsv"))
    pd.testing.assert_frame_equal(comma, tab, check_exact=True)


@pytest.mark.parametrize(
    "dates",
    [
        ["2020/01/02", "2020/01/03", "2020/01/06"],
        ["20200102", "20200103", "20200106"],
        ["2020-01-02 00:00:00", "2020-01-03 00:00:00", "2020-01-06 00:00:00"],
        ["Jan 2 2020", "Jan 3 2020", "Jan 6 2020"],
        ["2020-01-02 16:00", "2020-01-03 16:00", "2020-01-06 16:00"],
        ["2020-01-02T00:00:00+09:00", "2020-01-03T00:00:00+09:00", "2020-01-06T00:00:00+09:00"],
    ],
)
def test_csv_date_formats(tmp_path, dates):
    rows = [d + r[len("2020-01-02") :] for d, r in zip(dates, GOOD_ROWS, strict=True)]
    df = load_csv(rows_csv(tmp_path, rows))
    assert_tidy(df)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06"]
    assert df["close"].tolist() == [10.5, 11.0, 10.8]


def test_csv_semicolon_with_slash_dates_and_adj_close(tmp_path):
    path = write_csv(
        tmp_path,
        "DATE;OPEN;HIGH;LOW;CLOSE;VOLUME;ADJ CLOSE\n"
        "2020/01/02;10;11;9;10;100;5\n"
        "2020/01/03;20;24;18;22;200;11\n",
    )
    df = load_csv(path)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03"]
    assert df["close"].tolist() == [5.0, 11.0]
    assert df["open"].tolist() == [5.0, 10.0]


def test_csv_extra_columns_ignored(tmp_path):
    path = rows_csv(
        tmp_path,
        [r + f",note{i},0.{i},x" for i, r in enumerate(GOOD_ROWS)],
        header="Date,Open,High,Low,Close,Volume,Comment,Change,Other\n",
    )
    df = load_csv(path)
    assert list(df.columns) == FIELDS
    plain = load_csv(rows_csv(tmp_path, GOOD_ROWS, name="plain.csv"))
    pd.testing.assert_frame_equal(df, plain, check_exact=True)


def test_csv_integer_prices_become_float64(tmp_path):
    df = load_csv(rows_csv(tmp_path, ["2020-01-02,10,11,9,10,100", "2020-01-03,10,12,9,11,200"]))
    for col in ["open", "high", "low", "close", "volume"]:
        assert df[col].dtype == np.float64
    assert df["tradable"].dtype == np.bool_


def test_csv_missing_file_names_path(tmp_path):
    path = tmp_path / "nope" / "missing.csv"
    with pytest.raises(DataError, match=rf"file not found: {where(path)}"):
        load_csv(path)


def test_csv_header_only_is_error(tmp_path):
    path = write_csv(tmp_path, HEADER)
    with pytest.raises(DataError, match=rf"{where(path)} has no rows"):
        load_csv(path)


@pytest.mark.parametrize("n_rows", [1, 2])
def test_csv_missing_date_column_is_named(tmp_path, n_rows):
    rows = ["10,11,9,10.5,100", "10.5,12,10,11,200"][:n_rows]
    path = rows_csv(tmp_path, rows, header="Open,High,Low,Close,Volume\n")
    with pytest.raises(DataError, match=r"(?i)missing column.*date"):
        load_csv(path)


def test_csv_utf8_bom_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text(HEADER + "\n".join(GOOD_ROWS) + "\n", encoding="utf-8-sig")
    df = load_csv(path)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06"]


def test_csv_accepts_pathlike(tmp_path):
    path = rows_csv(tmp_path, GOOD_ROWS)
    df = load_prices(path, source="csv")
    assert len(df) == 3
    assert df.attrs["symbols"] == [str(path)]
