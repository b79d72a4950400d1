"""finance-datareader source and its disk cache, all offline.

Most tests fake ``FinanceDataReader.DataReader`` with frames shaped like its readers'
output, to test our own logic (cache, seams, halts, timeouts). The replay tests at the end
run the real library on recorded HTTP responses (``tests/fixtures/fdr``, replayed with
``responses``): its Naver reader (KRX codes) and Yahoo reader (US tickers) parse them,
then our normalisation, validation and adjustment run, and the frame is checked value by
value against the numbers written in the test.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import FinanceDataReader
import numpy as np
import pandas as pd
import pytest
import requests
import responses
from responses import matchers

from stockgym.data import DataError, fdr, krx_listing, load_prices

TODAY = pd.Timestamp("2024-06-28")  # a Friday; pinned so coverage is deterministic
DAYS = pd.bdate_range("2023-01-02", TODAY)
HALT = pd.Timestamp("2024-03-14")


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s)


def krx_frame() -> pd.DataFrame:
    """Shaped like NaverDailyReader: integer-valued prices, Change, index named Date."""
    close = 70000 + 100 * np.arange(len(DAYS)) % 5000
    df = pd.DataFrame(
        {
            "Open": close - 200,
            "High": close + 300,
            "Low": close - 400,
            "Close": close,
            "Volume": 1_000_000 + np.arange(len(DAYS)),
        },
        index=pd.DatetimeIndex(DAYS, name="Date"),
    ).astype("int64")
    i = df.index.get_loc(HALT)
    df.iloc[i, :3] = 0  # halted: Open/High/Low 0, Close = previous close, Volume 0
    df.iloc[i, df.columns.get_loc("Close")] = df["Close"].iloc[i - 1]
    df.iloc[i, df.columns.get_loc("Volume")] = 0
    df["Change"] = df["Close"].pct_change()
    return df


def us_frame(adj_factor: float = 0.9) -> pd.DataFrame:
    """Shaped like YahooDailyReader: Adj Close, unnamed DatetimeIndex."""
    close = 150.0 + np.sin(np.arange(len(DAYS)) / 7.0) * 10 + np.arange(len(DAYS)) * 0.01
    return pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.25,
            "Low": close - 1.5,
            "Close": close,
            "Adj Close": close * adj_factor,
            "Volume": 5e7 + np.arange(len(DAYS)),
        },
        index=pd.DatetimeIndex(DAYS),
    )


class FakeReader:
    """Stands in for ``FinanceDataReader.DataReader``; records (symbol, start, end)."""

    def __init__(self) -> None:
        self.data = {"005930": krx_frame(), "AAPL": us_frame()}
        self.calls: list[tuple[str, pd.Timestamp | None, pd.Timestamp | None]] = []
        self.error: Exception | None = None

    def __call__(self, symbol, start=None, end=None, exchange=None, data_source=None):
        self.calls.append((symbol, start, end))
        if self.error is not None:
            raise self.error
        df = self.data.get(symbol.upper())
        if df is None:
            return pd.DataFrame()  # what the library does for unknown codes
        lo = ts("1980-01-01") if start is None else pd.Timestamp(start)
        hi = TODAY + pd.Timedelta(days=1) if end is None else pd.Timestamp(end)
        if df.index.name == "Date":  # Naver: inclusive end
            return df.loc[lo:hi].copy()
        return df[(df.index >= lo) & (df.index < hi)].copy()  # Yahoo: exclusive end


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    # Never touch the home directory, and pin "today".
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setattr(fdr, "_today", lambda: TODAY)
    # The KRX board listing has its own tests (test_krx_listing.py); here it is not asked.
    monkeypatch.setattr(krx_listing, "krx_boards", lambda *args: {})


@pytest.fixture
def fake(monkeypatch) -> FakeReader:
    reader = FakeReader()
    monkeypatch.setattr(FinanceDataReader, "DataReader", reader)
    return reader


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def cache_files(d) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ----------------------------------------------------------------------------- normalisation


def test_krx_is_normalised(fake, cache):
    df = load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    raw = krx_frame().loc["2024-01-02":"2024-03-29"]
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "tradable"]
    assert df.index.name == "date" and df.index[0] == ts("2024-01-02")
    assert df.index[-1] == ts("2024-03-29")
    np.testing.assert_array_equal(df["close"].to_numpy(), raw["Close"].to_numpy(float))
    assert df["close"].dtype == np.float64
    assert df.attrs["source"] == "fdr" and df.attrs["adjusted"] is False
    # Inclusive end: one day more is asked of the library, then trimmed.
    assert fake.calls == [("005930", ts("2024-01-02"), ts("2024-03-30"))]


def test_us_adjusted_by_default_and_raw_on_request(fake, cache):
    adj = load_prices("AAPL", "2024-01-02", "2024-02-29", source="fdr", cache_dir=cache)
    raw = load_prices(
        "AAPL", "2024-01-02", "2024-02-29", source="fdr", cache_dir=cache, adjust=False
    )
    src = us_frame().loc["2024-01-02":"2024-02-29"]
    factor = (src["Adj Close"] / src["Close"]).to_numpy()
    np.testing.assert_allclose(adj["close"].to_numpy(), src["Adj Close"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(adj["open"].to_numpy(), src["Open"].to_numpy() * factor, rtol=1e-12)
    np.testing.assert_array_equal(raw["close"].to_numpy(), src["Close"].to_numpy())
    assert adj.attrs["adjusted"] is True and raw.attrs["adjusted"] is False
    assert adj.index[-1] == ts("2024-02-29")  # the Yahoo-style exclusive end was widened
    assert len(fake.calls) == 1  # the second load came from the cache


def test_krx_halted_day_is_kept_untradable(fake, cache):
    df = load_prices("005930", "2024-03-01", "2024-03-29", source="fdr", cache_dir=cache)
    assert HALT in df.index
    assert not df.at[HALT, "tradable"]
    assert df["tradable"].sum() == len(df) - 1
    assert df.at[HALT, "close"] == df["close"].shift(1).at[HALT]


def test_empty_frame_raises_naming_symbol_and_range(fake, cache):
    with pytest.raises(DataError, match=r"NOSUCH.*2024-01-02 \.\. 2024-02-01"):
        load_prices("NOSUCH", "2024-01-02", "2024-02-01", source="fdr", cache_dir=cache)
    assert cache_files(cache) == []  # nothing cached for an empty answer


# ----------------------------------------------------------------------------- cache hits


def test_cache_hit_makes_no_call_and_works_offline(fake, cache):
    first = load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    fake.error = requests.ConnectionError("offline")
    again = load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    inner = load_prices("005930", "2024-02-01", "2024-02-29", source="fdr", cache_dir=cache)
    pd.testing.assert_frame_equal(first, again)
    assert inner.index[0] == ts("2024-02-01") and inner.index[-1] == ts("2024-02-29")
    assert len(fake.calls) == 1


def test_holiday_bounded_request_is_a_hit(fake, cache):
    # Saturday .. Sunday: coverage is the requested range, not the first/last bar.
    for _ in range(2):
        load_prices("005930", "2024-01-06", "2024-03-31", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 1


def test_auto_uses_cache_first(fake, cache):
    load_prices("AAPL", "2024-01-02", "2024-03-28", source="fdr", cache_dir=cache)
    fake.error = requests.ConnectionError("offline")
    df = load_prices("AAPL", "2024-01-10", "2024-03-01", source="auto", cache_dir=cache)
    assert len(df) > 30 and len(fake.calls) == 1


def test_start_none_is_open_ended(fake, cache):
    df = load_prices("005930", None, "2024-02-29", source="fdr", cache_dir=cache)
    assert fake.calls == [("005930", None, ts("2024-03-01"))]
    assert df.index[0] == DAYS[0]
    load_prices("005930", "2023-06-01", "2024-01-31", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 1  # any start is inside an open-ended coverage


def test_end_none_covers_today_and_future_end_is_clamped(fake, cache, monkeypatch):
    load_prices("005930", "2024-06-03", None, source="fdr", cache_dir=cache)
    assert fake.calls == [("005930", ts("2024-06-03"), None)]  # None = "now" to the library
    load_prices("005930", "2024-06-03", "2030-01-01", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 1  # coverage is through today, which is all there is
    [entry] = fdr.cache_entries(cache)
    assert entry["covered_end"] == "2024-06-28"
    # On a later day the tail is fetched (from the last cached bar, the seam).
    monkeypatch.setattr(fdr, "_today", lambda: TODAY + pd.Timedelta(days=3))
    load_prices("005930", "2024-06-03", None, source="fdr", cache_dir=cache)
    assert fake.calls[1] == ("005930", TODAY, None)


def test_refresh_ignores_cache(fake, cache):
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    load_prices("005930", "2024-02-01", "2024-02-29", source="fdr", cache_dir=cache, refresh=True)
    assert fake.calls[-1] == ("005930", ts("2024-02-01"), ts("2024-03-01"))
    assert fdr.cache_entries(cache)[0]["covered_start"] == "2024-02-01"


# ----------------------------------------------------------------------------- extending


def test_wider_range_fetches_only_missing_parts(fake, cache, tmp_path):
    load_prices("005930", "2024-02-01", "2024-03-29", source="fdr", cache_dir=cache)
    wide = load_prices("005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=cache)
    # Before: up to and including the first cached bar; after: from the last cached bar.
    assert fake.calls[1:] == [
        ("005930", ts("2024-01-02"), ts("2024-02-02")),
        ("005930", ts("2024-03-29"), ts("2024-06-01")),
    ]
    direct = load_prices(
        "005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=tmp_path / "c2"
    )
    pd.testing.assert_frame_equal(wide, direct)
    load_prices("005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 4  # 3 above + the direct one; the repeat was a hit
    [entry] = fdr.cache_entries(cache)
    assert (entry["covered_start"], entry["covered_end"]) == ("2024-01-02", "2024-05-31")


def test_changed_adjustment_basis_refetches_whole_range(fake, cache):
    load_prices("AAPL", "2024-03-01", "2024-04-30", source="fdr", cache_dir=cache)
    fake.data["AAPL"] = us_frame(adj_factor=0.8)  # a new dividend re-based Adj Close
    df = load_prices("AAPL", "2024-03-01", "2024-05-31", source="fdr", cache_dir=cache)
    assert fake.calls[1:] == [
        ("AAPL", ts("2024-04-30"), ts("2024-06-01")),  # the tail, whose seam disagrees
        ("AAPL", ts("2024-03-01"), ts("2024-06-01")),  # so everything again
    ]
    raw = load_prices(
        "AAPL", "2024-03-01", "2024-05-31", source="fdr", cache_dir=cache, adjust=False
    )
    np.testing.assert_allclose((df["close"] / raw["close"]).to_numpy(), 0.8, rtol=1e-12)
    assert len(fake.calls) == 3


def test_seam_within_tolerance_is_stitched(fake, cache):
    load_prices("AAPL", "2024-03-01", "2024-04-30", source="fdr", cache_dir=cache)
    fake.data["AAPL"]["Adj Close"] *= 1 + 1e-9  # float noise, not a new basis
    load_prices("AAPL", "2024-03-01", "2024-05-31", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 2


def test_offline_with_partial_cache(fake, cache):
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    fake.error = requests.ConnectionError("offline")
    with pytest.raises(DataError, match=r"2024-01-02 \.\. 2024-03-29 only"):
        load_prices("005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=cache)
    # "Up to now" offline: the newest cached bars, with a warning.
    with pytest.warns(UserWarning, match="cached data up to 2024-03-29"):
        df = load_prices("005930", "2024-01-02", None, source="fdr", cache_dir=cache)
    assert df.index[-1] == ts("2024-03-29")


# ----------------------------------------------------------------------------- files


def test_atomic_write_keeps_previous_file(fake, cache, monkeypatch):
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    path = fdr.cache_path("005930", cache)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as m, pytest.warns(UserWarning, match="could not write"):
        m.setattr(os, "replace", crash)
        df = load_prices("005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=cache)
    assert df.index[-1] == ts("2024-05-31")  # the data still comes back
    assert path.read_bytes() == before
    assert cache_files(cache) == [path.name]  # no temp file left behind
    assert fdr.cache_entries(cache)[0]["covered_end"] == "2024-03-29"
    # With the disk back, the next call completes the cache (no crash left a mess).
    load_prices("005930", "2024-01-02", "2024-05-31", source="fdr", cache_dir=cache)
    assert fdr.cache_entries(cache)[0]["covered_end"] == "2024-05-31"


def test_leftover_temp_file_is_ignored(fake, cache):
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    (cache / ".005930.csv.gz.abc.tmp").write_bytes(b"half a file")
    assert [e["symbol"] for e in fdr.cache_entries(cache)] == ["005930"]
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"not gzip at all",
        lambda b: b[: len(b) // 2],  # truncated gzip
        lambda b: gzip.compress(b"date,open\n2024-01-02,1\n"),  # no header
        lambda b: gzip.compress(gzip.decompress(b).replace(b"005930", b"000660", 1)),
    ],
    ids=["garbage", "truncated", "no-header", "wrong-symbol"],
)
def test_corrupt_cache_is_a_miss(fake, cache, damage):
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    path = fdr.cache_path("005930", cache)
    path.write_bytes(damage(path.read_bytes()))
    df = load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    assert len(fake.calls) == 2 and len(df) > 50
    assert fdr.cache_entries(cache)[0]["rows"] == len(df)  # repaired


def test_floats_round_trip_exactly(cache):
    rng = np.random.default_rng(0)
    n = 2000
    vals = rng.lognormal(0, 3, size=(n, 6)) * rng.choice([1e-4, 1, 1e6], size=(n, 1))
    cols = ["open", "high", "low", "close", "volume", "adj_close"]
    frame = pd.DataFrame(
        vals, columns=cols, index=pd.bdate_range("2000-01-03", periods=n, name="date")
    )
    frame.iloc[5, 0] = np.nan
    entry = fdr._Entry(frame, None, frame.index[-1], "2024-01-01T00:00:00+00:00", "X")
    path = cache / "X.csv.gz"
    fdr._write_entry(path, entry)
    back = fdr._read_entry(path, "X")
    assert back is not None and back.covered_start is None
    pd.testing.assert_frame_equal(back.frame, frame, check_exact=True, check_freq=False)


@pytest.mark.parametrize(
    "symbol", ["US500", "KS11", "005930", "BRK.B", "^GSPC", "USD/KRW", "KRX:005930", "../x", "CON"]
)
def test_cache_names_are_safe(symbol, cache):
    path = fdr.cache_path(symbol, cache)
    assert path.parent == cache
    assert re.fullmatch(r"[A-Za-z0-9%_-]+\.csv\.gz", path.name)


def test_cache_names_are_distinct_and_case_insensitive(cache):
    names = ["BRK.B", "BRK-B", "BRK_B", "BRK%2EB", "^GSPC", "GSPC", "CON", "CON_"]
    assert len({fdr.cache_path(s, cache) for s in names}) == len(names)
    assert fdr.cache_path("aapl", cache) == fdr.cache_path(" AAPL", cache)


def test_odd_symbol_round_trips_through_cache(fake, cache):
    fake.data["^GSPC"] = us_frame()
    load_prices("^GSPC", "2024-01-02", "2024-01-31", source="fdr", cache_dir=cache)
    load_prices("^GSPC", "2024-01-02", "2024-01-31", source="fdr", cache_dir=cache)
    assert cache_files(cache) == ["%5EGSPC.csv.gz"] and len(fake.calls) == 1
    assert fdr.cache_entries(cache)[0]["symbol"] == "^GSPC"


def test_cache_entries_lists_what_is_cached(fake, cache):
    assert fdr.cache_entries(cache) == []
    load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    load_prices("AAPL", None, "2024-02-29", source="fdr", cache_dir=cache)
    (cache / "JUNK.csv.gz").write_bytes(b"junk")
    krx, us = fdr.cache_entries(cache)
    assert (krx["symbol"], krx["first"], krx["last"], krx["adjusted"]) == (
        "005930",
        "2024-01-02",
        "2024-03-29",
        False,
    )
    assert krx["rows"] == len(krx_frame().loc["2024-01-02":"2024-03-29"])
    assert (us["symbol"], us["first"], us["covered_start"], us["adjusted"]) == (
        "AAPL",
        "2023-01-02",
        None,
        True,
    )
    assert os.path.isfile(us["path"]) and pd.Timestamp(us["fetched_at"]).tz is not None


def test_env_var_and_argument_choose_the_directory(fake, tmp_path, monkeypatch):
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(env_dir))
    assert fdr.resolve_cache_dir() == env_dir
    assert fdr.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    load_prices("005930", "2024-01-02", "2024-01-31", source="fdr")
    assert cache_files(env_dir) == ["005930.csv.gz"]
    assert [e["symbol"] for e in fdr.cache_entries()] == ["005930"]


def test_default_directory_is_user_cache_dir(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.delenv("STOCKGYM_CACHE_DIR")
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / app))
    assert fdr.resolve_cache_dir() == tmp_path / "stockgym" / "prices"


# ----------------------------------------------------------------------------- network failures


def test_library_error_says_no_network_and_suggests_offline_sources(fake, cache):
    fake.error = requests.ConnectionError("Max retries exceeded")
    with pytest.raises(DataError) as err:
        load_prices("005930", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
    msg = str(err.value)
    assert "005930" in msg and "no network" in msg
    assert "--source sample" in msg and "--source csv" in msg


def test_hung_call_times_out(monkeypatch, cache):
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)
        return pd.DataFrame()

    monkeypatch.setattr(FinanceDataReader, "DataReader", hang)
    t0 = time.monotonic()
    try:
        with pytest.raises(DataError, match="did not answer within 0.5 s"):
            load_prices(
                "AAPL", "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache, timeout=0.5
            )
    finally:
        release.set()
    assert time.monotonic() - t0 < 2.0


def test_hung_call_does_not_block_exit_and_import_is_lazy(tmp_path):
    # One subprocess for both checks (interpreter start-up dominates the cost).
    code = textwrap.dedent(
        """
        import sys, time
        from stockgym.data import DataError, load_prices
        assert "FinanceDataReader" not in sys.modules, "imported eagerly"
        import FinanceDataReader
        FinanceDataReader.DataReader = lambda *a, **k: time.sleep(3600)
        try:
            load_prices("AAPL", "2024-01-02", "2024-02-01", source="fdr", timeout=0.2)
        except DataError:
            print("timed out")
        """
    )
    env = {**os.environ, "STOCKGYM_CACHE_DIR": str(tmp_path)}
    # A non-daemon worker (a plain ThreadPoolExecutor) would hang here until the timeout.
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "timed out"


@pytest.mark.parametrize("symbol", ["AAPL", "005930"])
def test_dead_network_via_http_layer(symbol, cache):
    # The real library, with every HTTP request failing as on a machine with no network.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for method in (responses.GET, responses.POST):
            rsps.add(
                method, re.compile(r".*"), body=requests.ConnectionError("network unreachable")
            )
        with pytest.raises(DataError, match="--source sample") as err:
            load_prices(symbol, "2024-01-02", "2024-03-29", source="fdr", cache_dir=cache)
        assert len(rsps.calls) >= 1  # it really went through requests
    assert symbol in str(err.value) and "ConnectionError" in str(err.value)
    assert cache_files(cache) == []


# ----------------------------------------------------------------------------- recorded HTTP

FIXTURES = Path(__file__).parent / "fixtures" / "fdr"
# Jan 1 and 15 are holidays on both exchanges; the days between are all trading days
DAYS_JAN = pd.DatetimeIndex(pd.bdate_range("2024-01-02", "2024-01-12"), freq=None, name="date")


def serve(rsps, url: str, fixture: str, content_type: str, **query: str) -> None:
    """Answer a GET of ``url`` with exactly the query ``query`` with a fixture file."""
    body = (FIXTURES / fixture).read_bytes()
    match = [matchers.query_param_matcher(query)]
    rsps.get(url, body=body, content_type=content_type, match=match)


def table(text: str) -> np.ndarray:
    return np.array([row.split() for row in text.strip().splitlines()], dtype="float64")


@pytest.fixture
def utc(monkeypatch):
    """The Yahoo reader turns dates into epoch seconds with ``time.mktime`` (local
    time): pin the zone so the requested ``period1`` / ``period2`` are known numbers."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_real_naver_parsing_of_a_recorded_krx_response(cache):
    # Naver's chart endpoint answers the last `count` days as EUC-KR XML, whatever the range
    with responses.RequestsMock() as rsps:
        serve(
            rsps,
            "https://fchart.stock.naver.com/sise.nhn",
            "naver_005930.xml",
            "text/xml;charset=EUC-KR",
            timeframe="day",
            count="6000",
            requestType="0",
            symbol="005930",
        )
        df = load_prices("005930", "2024-01-02", "2024-01-12", source="fdr", cache_dir=cache)
        assert len(rsps.calls) == 1
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "tradable"]
    pd.testing.assert_index_equal(df.index, DAYS_JAN)  # the days before and after: trimmed
    expected = table("""
        78200 79800 78200 79600 17142847
        78500 78800 77000 77000 21753644
        76100 77300 76100 76600 15324439
        76700 77100 76400 76600 11304316
        77000 77500 76400 76500 11088724
        77400 77700 74300 74700 26019240
        75000 75200 73200 73600 20259529
        72900 73600 72700 73200 57691266
        73000 74100 72800 73100 13038939
    """)
    values = df[["open", "high", "low", "close", "volume"]]
    assert (values.dtypes == np.float64).all()
    np.testing.assert_array_equal(values.to_numpy(), expected)
    assert df["tradable"].all()
    assert df.attrs["source"] == "fdr" and df.attrs["adjusted"] is False
    # read back from the cache, with no network: the same frame
    with responses.RequestsMock():
        again = load_prices("005930", "2024-01-02", "2024-01-12", source="fdr", cache_dir=cache)
    pd.testing.assert_frame_equal(again, df)


def test_real_yahoo_parsing_of_a_recorded_us_response(cache, utc):
    with responses.RequestsMock() as rsps:
        # [2024-01-02, 2024-01-13) in epoch seconds: our inclusive end + 1 day, exclusive
        serve(
            rsps,
            "https://query2.finance.yahoo.com/v8/finance/chart/AAPL",
            "yahoo_AAPL.json",
            "application/json;charset=utf-8",
            period1="1704153600",
            period2="1705104000",
            interval="1d",
            includeAdjustedClose="true",
        )
        adj = load_prices("AAPL", "2024-01-02", "2024-01-12", source="fdr", cache_dir=cache)
        raw = load_prices(
            "AAPL", "2024-01-02", "2024-01-12", source="fdr", cache_dir=cache, adjust=False
        )
        assert len(rsps.calls) == 1  # the second load came from the cache
    # Yahoo sends float32-rounded prices as JSON doubles, volumes as integers
    o, h, lo, c, v = table("""
        187.15 188.44 183.89 185.64 82488700
        184.22 185.88 183.43 184.25 58414500
        182.15 183.09 180.88 181.91 71983600
        181.99 182.76 180.17 181.18 62303300
        182.09 185.60 181.50 185.56 59144500
        183.92 185.15 182.73 185.14 42841800
        184.35 186.40 183.92 186.19 46792900
        186.54 187.05 183.62 185.59 49128400
        186.06 186.74 185.19 185.92 40444700
    """).T
    o, h, lo, c = (x.astype(np.float32).astype(np.float64) for x in (o, h, lo, c))
    adj_close = (c * 0.9948).astype(np.float32).astype(np.float64)
    for df in (adj, raw):
        assert list(df.columns) == ["open", "high", "low", "close", "volume", "tradable"]
        pd.testing.assert_index_equal(df.index, DAYS_JAN)
        assert df["tradable"].all()
    got = raw[["open", "high", "low", "close", "volume"]].to_numpy()
    np.testing.assert_array_equal(got, np.column_stack([o, h, lo, c, v]))
    factor = adj_close / c  # back-adjusted by Adj Close / Close
    np.testing.assert_allclose(adj["close"].to_numpy(), adj_close, rtol=1e-15)
    for col, x in (("open", o), ("high", h), ("low", lo)):
        np.testing.assert_allclose(adj[col].to_numpy(), x * factor, rtol=1e-15)
    np.testing.assert_allclose(adj["volume"].to_numpy(), v / factor, rtol=1e-15)
    assert adj.attrs["adjusted"] is True and raw.attrs["adjusted"] is False
