"""Real-world files: every case of issue 19's data findings, each with a fixture file in
tests/fixtures/data/ (see its README), plus the small reliability fixes of the core
(stale temp files, umask, number-range messages)."""

from __future__ import annotations

import os
import time
import warnings

import pandas as pd
import pytest

from stockgym.core import clean_stale_temps, write_bytes, write_text
from stockgym.data import DataError, load_prices
from stockgym.data.quality import MAX_GAP_BDAYS, DataWarning, exchange_tz

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def fixture(name: str) -> str:
    return os.path.join(FIX, name)


def load(name: str, **kw) -> pd.DataFrame:
    return load_prices(fixture(name), source="csv", **kw)


def days(df: pd.DataFrame) -> list[str]:
    return [str(d.date()) for d in df.index]


# ------------------------------------------------------- adjusted / raw ratio jumps
def test_adj_close_spike_is_refused_with_its_dates():
    with pytest.raises(DataError, match=r"ratio jumps.*2024-01-05, 2024-01-08.*repair=True"):
        load("adj_spike.csv")


def test_adj_close_spike_repaired_on_request_with_a_warning_and_attrs():
    with pytest.warns(DataWarning, match="2024-01-05"):
        df = load("adj_spike.csv", repair=True)
    notes = df.attrs["repairs"]
    assert len(notes) == 1 and "2024-01-05" in notes[0] and "2024-01-08" not in notes[0]
    # the spike day carries the previous day's factor (99.0 / 100.0): no 1e6 price left
    assert df["close"].max() < 200.0
    assert df.loc["2024-01-05", "close"] == pytest.approx(99.5 * 0.99)


def test_split_left_in_the_raw_close_is_not_a_spike():
    df = load("split_in_raw.csv")  # the adjusted series is continuous: accepted
    assert df["close"].tolist() == pytest.approx([100.5, 101.0, 100.0, 99.5])


# ------------------------------------------------------------------ time zones
def test_yfinance_new_york_offsets_across_dst_keep_their_dates():
    df = load("yfinance_ny_dst.csv")
    assert days(df) == ["2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"]


def test_korean_midnight_stored_as_utc_is_not_a_day_early():
    # the KRX code names the exchange: 15:00 UTC is midnight in Seoul the next day
    df = load("005930.csv")
    assert days(df) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    # a file name that says nothing: the tz argument decides
    df = load("kst_midnight_as_utc.csv", tz="Asia/Seoul")
    assert days(df) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


def test_tz_argument_converts_every_stamp():
    df = load("yfinance_ny_dst.csv", tz="Asia/Seoul")  # NY midnight is 13:00/14:00 Seoul
    assert days(df) == ["2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"]
    df = load("yfinance_ny_dst.csv", tz="UTC")  # 05:00 / 04:00 UTC, the same day
    assert days(df)[0] == "2024-03-07"


def test_exchange_tz_rule():
    assert exchange_tz("005930") == "Asia/Seoul"
    assert exchange_tz("/data/005930.csv") == "Asia/Seoul"
    assert exchange_tz("AAPL") == "America/New_York"


# ------------------------------------------------------------------------ gaps
def test_long_gap_is_reported_in_a_warning_and_attrs():
    with pytest.warns(DataWarning, match=f"longer than {MAX_GAP_BDAYS} business days"):
        df = load("gap.csv")
    (gap,) = df.attrs["gaps"]
    assert (gap["after"], gap["before"]) == ("2010-01-05", "2020-01-06")
    assert gap["business_days"] > 2500


def test_gaps_attr_per_symbol_and_none_for_clean_data(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        clean = load("yfinance_ny_dst.csv")
    assert clean.attrs["gaps"] == []
    other = tmp_path / "other.csv"
    other.write_bytes(open(fixture("gap.csv"), "rb").read())
    with pytest.warns(DataWarning):
        both = load_prices([fixture("gap.csv"), str(other)], source="csv")
    assert set(both.attrs["gaps"]) == {fixture("gap.csv"), str(other)}


# ------------------------------------------------------- broken files: one clear line
@pytest.mark.parametrize("name", ["empty.csv", "header_only.csv"])
def test_empty_files_are_a_data_error(name):
    with pytest.raises(DataError, match=r"empty|no rows"):
        load(name)


def test_colliding_column_names_are_a_data_error():
    with pytest.raises(DataError, match=r"columns \['Close', 'close'\] all mean 'close'"):
        load("close_collision.csv")


def test_mixed_date_formats_name_the_value_that_failed():
    with pytest.raises(DataError, match=r"value '01/04/2024' \(data row 3\)"):
        load("mixed_dates.csv")


# ------------------------------------------------------------- core: temp files
def test_stale_temp_files_of_killed_writes_are_cleaned(tmp_path):
    target = tmp_path / "checkpoint.pt"
    write_bytes(target, b"ok")
    stale = tmp_path / ".checkpoint.pt.abcd1234.tmp"  # what a killed write leaves
    fresh = tmp_path / ".cache.csv.gz.zzzz9999.tmp"  # a write in progress
    other = tmp_path / ".notes.tmp"  # not our naming
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and other.exists() and target.exists()
    assert clean_stale_temps(tmp_path / "missing") == []


def test_written_files_follow_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        p = write_text(tmp_path / "a.json", "{}")
        assert p.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        p = write_text(tmp_path / "b.json", "{}")
        assert p.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(before)


def test_reward_scale_inf_message_excludes_inf():
    from stockgym.agents.config import CommonConfig

    with pytest.raises(ValueError, match=r"reward_scale must be a finite number in \(0.0, inf\),"):
        CommonConfig(reward_scale=float("inf"))


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_signal_shares_must_be_finite(capsys, value):
    from stockgym.cli import main

    # checked before the model is read: the run dir need not exist
    assert main(["signal", "--model", "no-such-run", "--shares", value]) == 2
    err = capsys.readouterr().err
    assert "--shares must be finite numbers of shares" in err and "NaN" not in err


def test_output_dirs_and_files_follow_the_umask(tmp_path, monkeypatch):
    """Run dirs, backtest dirs and atomic writes get 0666/0777 minus the umask, not the
    0600/0700 of tempfile's private files."""
    import os

    from stockgym.backtest.report import atomic_dir
    from stockgym.core import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "bt") as tmp:
            (tmp / "a.txt").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "bt").stat().st_mode & 0o777 == 0o755
