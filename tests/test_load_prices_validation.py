"""The validation rules every ``load_prices`` source goes through: each bad input gets
a DataError naming the file, column, date and value (all offline, fast)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from price_files import (
    GOOD_ROWS,
    HEADER,
    assert_tidy,
    load_csv,
    rows_csv,
    where,
    write_csv,
)

from stockgym.data import DataError, load_prices

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("col", ["Open", "High", "Low", "Close", "Volume"])
def test_missing_column_named(tmp_path, col):
    cols = ["Date", "Open", "High", "Low", "Close", "Volume"]
    idx = cols.index(col)
    rows = [",".join(v for j, v in enumerate(r.split(",")) if j != idx) for r in GOOD_ROWS]
    path = rows_csv(tmp_path, rows, header=",".join(c for c in cols if c != col) + "\n")
    with pytest.raises(DataError, match=rf"{where(path)}.*missing column.*'{col.lower()}'"):
        load_csv(path)


def test_non_numeric_value_names_column_date_value(tmp_path):
    rows = [GOOD_ROWS[0], "2020-01-03,10.5,12,10,abc,200", GOOD_ROWS[2]]
    path = rows_csv(tmp_path, rows)
    with pytest.raises(DataError, match=rf"{where(path)}.*'close'.*non-numeric.*'abc'.*2020-01-03"):
        load_csv(path)


def test_non_numeric_volume_with_thousands_separator(tmp_path):
    path = write_csv(tmp_path, HEADER + '2020-01-02,10,11,9,10.5,"1,000"\n')
    with pytest.raises(DataError, match=r"'volume'.*non-numeric.*'1,000'.*2020-01-02"):
        load_csv(path)


def test_bad_date_value_named(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "notadate,10.5,12,10,11,200"])
    with pytest.raises(DataError, match=rf"{where(path)}.*cannot read dates.*'notadate'"):
        load_csv(path)


def test_nan_close_on_tradable_day(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,12,10,,200", GOOD_ROWS[2]])
    with pytest.raises(
        DataError, match=rf"{where(path)}.*'close' is nan on tradable day 2020-01-03"
    ):
        load_csv(path)


def test_inf_price_on_tradable_day(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,inf,10,11,200"])
    with pytest.raises(DataError, match=r"'high' is inf on tradable day 2020-01-03"):
        load_csv(path)


@pytest.mark.parametrize("bad", ["0", "-1.5"])
def test_non_positive_price_on_tradable_day(tmp_path, bad):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], f"2020-01-03,10.5,12,{bad},11,200"])
    with pytest.raises(
        DataError,
        match=rf"{where(path)}.*'low' is {re.escape(str(float(bad)))} \(<= 0\) on tradable day 2020-01-03",
    ):
        load_csv(path)


def test_high_below_max_open_close(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,10.8,10,11,200"])
    with pytest.raises(
        DataError,
        match=rf"{where(path)}.*'high' is 10\.8 on 2020-01-03, below max\(open=10\.5, close=11\.0\)",
    ):
        load_csv(path)


def test_low_above_min_open_close(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,12,10.7,11,200"])
    with pytest.raises(
        DataError,
        match=rf"{where(path)}.*'low' is 10\.7 on 2020-01-03, above min\(open=10\.5, close=11\.0\)",
    ):
        load_csv(path)


def test_high_equal_to_close_is_fine(tmp_path):
    df = load_csv(rows_csv(tmp_path, ["2020-01-02,10,11,10,11,100"]))
    assert df.loc["2020-01-02", "high"] == 11.0


def test_negative_volume(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,12,10,11,-5"])
    with pytest.raises(DataError, match=rf"{where(path)}.*negative volume -5\.0 on 2020-01-03"):
        load_csv(path)


def test_missing_volume_on_priced_day(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,12,10,11,"])
    with pytest.raises(DataError, match=r"missing volume on 2020-01-03.*dropna=True"):
        load_csv(path)


def test_duplicate_dates(tmp_path):
    path = rows_csv(tmp_path, [GOOD_ROWS[0], GOOD_ROWS[1], "2020-01-03,10.5,12,10,11,300"])
    with pytest.raises(DataError, match=rf"{where(path)}.*duplicate date 2020-01-03"):
        load_csv(path)
    with pytest.raises(DataError, match="duplicate date 2020-01-03"):
        load_csv(path, sort=True)  # sorting does not hide duplicates


def test_unsorted_dates_rejected_then_repaired(tmp_path):
    rows = [GOOD_ROWS[0], GOOD_ROWS[2], GOOD_ROWS[1]]
    path = rows_csv(tmp_path, rows)
    with pytest.raises(
        DataError,
        match=rf"{where(path)}.*not sorted: 2020-01-03 comes after 2020-01-06.*sort=True",
    ):
        load_csv(path)
    df = load_csv(path, sort=True)
    assert_tidy(df)
    expected = load_csv(rows_csv(tmp_path, GOOD_ROWS, name="sorted.csv"))
    pd.testing.assert_frame_equal(df, expected, check_exact=True, check_freq=False)
    assert df.attrs["repairs"] == ["sorted dates"]
    assert expected.attrs["repairs"] == []
    # the repair survives start/end slicing and shows up per symbol in a multi load
    df = load_csv(path, sort=True, start="2020-01-03")
    assert df.attrs["repairs"] == ["sorted dates"]
    multi = load_prices([str(path)], source="csv", sort=True)
    assert multi.attrs["repairs"] == {str(path): ["sorted dates"]}


def test_dropna_is_opt_in(tmp_path):
    rows = [
        GOOD_ROWS[0],
        "2020-01-03,10.5,,10,11,200",
        "2020-01-06,11,11.5,10.2,10.8,",
        "2020-01-07,11,11.5,10.2,10.8,150",
    ]
    path = rows_csv(tmp_path, rows)
    with pytest.raises(DataError, match=r"missing volume on 2020-01-06.*dropna=True"):
        load_csv(path)
    only_price = rows_csv(tmp_path, [rows[0], rows[1], rows[3]], name="q.csv")
    with pytest.raises(DataError, match=r"'high' is nan on tradable day 2020-01-03.*dropna=True"):
        load_csv(only_price)
    assert len(load_csv(only_price, dropna=True)) == 2
    df = load_csv(path, dropna=True)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-07"]
    assert df.attrs["repairs"] == ["dropna: dropped 2 rows with missing values"]
    assert not df[["open", "high", "low", "close", "volume"]].isna().any().any()


def test_dropna_keeps_halted_days(tmp_path):
    rows = [
        GOOD_ROWS[0],
        "2020-01-03,,,,,0",
        "2020-01-06,11,,10.2,10.8,150",
        "2020-01-07,11,11.5,10.2,10.8,150",
    ]
    df = load_csv(rows_csv(tmp_path, rows), dropna=True)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-07"]
    assert df["tradable"].tolist() == [True, False, True]
    assert df.attrs["repairs"] == ["dropna: dropped 1 rows with missing values"]


def test_min_rows(tmp_path):
    path = rows_csv(tmp_path, GOOD_ROWS)
    assert len(load_csv(path, min_rows=3)) == 3
    with pytest.raises(DataError, match=r"only 3 rows, fewer than the 4 required"):
        load_csv(path, min_rows=4)
    with pytest.raises(DataError, match=r"only 2 rows, fewer than the 3 required"):
        load_csv(path, start="2020-01-03", min_rows=3)
    with pytest.raises(DataError, match=r"only 3270 rows, fewer than the 5000 required"):
        load_prices("AAPL", source="sample", min_rows=5000)
    with pytest.raises(DataError, match=r"only 10 rows, fewer than the 11 required"):
        load_prices(["A", "B"], source="synthetic", n_days=10, min_rows=11)


def test_empty_date_range_names_range(tmp_path):
    path = rows_csv(tmp_path, GOOD_ROWS)
    with pytest.raises(
        DataError, match=rf"{where(path)}.*no rows between 2021-01-01 and 2021-12-31"
    ):
        load_csv(path, start="2021-01-01", end="2021-12-31")
    with pytest.raises(DataError, match=r"no rows between the beginning and 2019-12-31"):
        load_csv(path, end="2019-12-31")
    # a range between two trading days (a weekend)
    with pytest.raises(DataError, match=r"no rows between 2020-01-04 and 2020-01-05"):
        load_csv(path, start="2020-01-04", end="2020-01-05")
    with pytest.raises(DataError, match=r"symbol=AAPL.*no rows between 1990-01-01 and 1990-12-31"):
        load_prices("AAPL", start="1990-01-01", end="1990-12-31", source="sample")


def test_start_after_end(tmp_path):
    path = rows_csv(tmp_path, GOOD_ROWS)
    with pytest.raises(DataError, match=r"start 2020-01-06 is after end 2020-01-02"):
        load_csv(path, start="2020-01-06", end="2020-01-02")
    with pytest.raises(DataError, match=r"start 2005-01-01 is after end 2004-01-01"):
        load_prices("AAPL", start="2005-01-01", end="2004-01-01", source="sample")


def test_start_not_a_date():
    with pytest.raises(DataError, match=r"start date 'soon' is not a date"):
        load_prices("AAPL", start="soon", source="sample")


def test_single_day_range(tmp_path):
    df = load_csv(rows_csv(tmp_path, GOOD_ROWS), start="2020-01-03", end="2020-01-03")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2020-01-03"]


def test_halted_day_kept_not_filled(tmp_path):
    rows = [
        GOOD_ROWS[0],
        "2020-01-03,0,0,0,0,0",
        "2020-01-06,,,,,0",
        "2020-01-07,10.5,12,10,11,200",
    ]
    df = load_csv(rows_csv(tmp_path, rows))
    assert list(df.index.strftime("%Y-%m-%d")) == [
        "2020-01-02",
        "2020-01-03",
        "2020-01-06",
        "2020-01-07",
    ]
    assert df["tradable"].tolist() == [True, False, False, True]
    assert (df.loc["2020-01-03", ["open", "high", "low", "close", "volume"]] == 0).all()
    assert df.loc["2020-01-06", ["open", "high", "low", "close"]].isna().all()
    assert df.loc["2020-01-06", "volume"] == 0
    assert df.attrs["repairs"] == []


def test_halted_day_with_prices_not_tradable(tmp_path):
    rows = [GOOD_ROWS[0], "2020-01-03,10.5,10.5,10.5,10.5,0", GOOD_ROWS[2]]
    df = load_csv(rows_csv(tmp_path, rows))
    assert df["tradable"].tolist() == [True, False, True]
    assert df.loc["2020-01-03", "close"] == 10.5


def test_halted_day_with_adj_close_stays_raw(tmp_path):
    path = rows_csv(
        tmp_path,
        [
            "2020-01-02,10,11,9,10,100,5",
            "2020-01-03,0,0,0,0,0,0",
            "2020-01-06,,,,,0,",
            "2020-01-07,20,24,18,22,200,11",
        ],
        header="Date,Open,High,Low,Close,Volume,Adj Close\n",
    )
    df = load_csv(path)
    assert df["tradable"].tolist() == [True, False, False, True]
    assert df.loc["2020-01-02", "close"] == 5.0
    assert df.loc["2020-01-07", "close"] == 11.0
    assert (df.loc["2020-01-03", ["open", "high", "low", "close"]] == 0).all()
    assert df.loc["2020-01-06", ["open", "high", "low", "close"]].isna().all()


def test_nan_adj_close_on_tradable_day(tmp_path):
    path = rows_csv(
        tmp_path,
        ["2020-01-02,10,11,9,10,100,5", "2020-01-03,20,24,18,22,200,"],
        header="Date,Open,High,Low,Close,Volume,Adj Close\n",
    )
    with pytest.raises(DataError, match=r"'adj_close' is nan on tradable day 2020-01-03"):
        load_csv(path)


def test_errors_are_value_errors(tmp_path):
    assert issubclass(DataError, ValueError)
    path = rows_csv(tmp_path, [GOOD_ROWS[0], "2020-01-03,10.5,12,10,11,-5"])
    with pytest.raises(ValueError, match="negative volume"):
        load_csv(path)


def test_unknown_source():
    with pytest.raises(DataError, match=r"unknown source 'yahoo'.*csv.*sample.*synthetic"):
        load_prices("AAPL", source="yahoo")
