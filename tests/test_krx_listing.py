"""The KRX board of a six-digit code from finance-datareader's listing (faked: no
network here): put in ``prices.attrs["boards"]`` by ``load_prices(source="fdr")``, read by
the env's ``board="auto"``, cached on disk, and absent (KOSPI's rules, a warning) when
the listing cannot be fetched."""

from __future__ import annotations

import json

import FinanceDataReader
import numpy as np
import pandas as pd
import pytest

from stockgym.data import krx_listing, load_prices
from stockgym.envs import StockTradingEnv

DAYS = pd.bdate_range("2024-01-02", periods=80)


def naver_frame() -> pd.DataFrame:
    """What finance-datareader's Naver reader returns for a KRX code."""
    close = 70_000.0 + 100.0 * np.arange(len(DAYS))
    return pd.DataFrame(
        {
            "Open": close - 100.0,
            "High": close + 200.0,
            "Low": close - 200.0,
            "Close": close,
            "Volume": np.full(len(DAYS), 1e6),
        },
        index=pd.DatetimeIndex(DAYS, name="Date"),
    )


class FakeListing:
    def __init__(self, table: pd.DataFrame | Exception) -> None:
        self.table = table
        self.calls = 0

    def __call__(self, market: str):
        assert market == "KRX"
        self.calls += 1
        if isinstance(self.table, Exception):
            raise self.table
        return self.table


@pytest.fixture
def fdr_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        FinanceDataReader, "DataReader", lambda symbol, start=None, end=None: naver_frame()
    )
    return tmp_path / "cache"


LISTING = pd.DataFrame(
    {"Code": ["005930", "035720", "091990"], "Market": ["KOSPI", "KOSPI", "KOSDAQ GLOBAL"]}
)


def test_boards_from_the_listing_reach_the_env(fdr_offline, monkeypatch):
    listing = FakeListing(LISTING)
    monkeypatch.setattr(FinanceDataReader, "StockListing", listing)
    prices = load_prices(["005930", "091990"], source="fdr")
    assert prices.attrs["boards"] == {"005930": "KOSPI", "091990": "KOSDAQ GLOBAL"}
    env = StockTradingEnv(prices, window_size=5)
    assert env.rules.boards == ("kospi", "kosdaq") and env.rules.tax_schedule == "krx"
    # an explicit board wins over the listing
    env = StockTradingEnv(prices, window_size=5, board="kospi")
    assert env.rules.boards == ("kospi", "kospi")
    # cached: a second load does not fetch the listing again
    load_prices("091990", source="fdr")
    assert listing.calls == 1
    saved = json.loads((fdr_offline / krx_listing.LISTING_FILE).read_text())
    assert saved["boards"]["035720"] == "KOSPI"


def test_unavailable_listing_warns_and_falls_back_to_kospi(fdr_offline, monkeypatch):
    monkeypatch.setattr(FinanceDataReader, "StockListing", FakeListing(ConnectionError("down")))
    with pytest.warns(UserWarning, match="KRX listing unavailable.*ConnectionError"):
        prices = load_prices("091990", source="fdr")
    assert "boards" not in prices.attrs
    assert StockTradingEnv(prices, window_size=5).rules.boards == ("kospi",)


def test_us_tickers_never_ask_for_the_listing(fdr_offline, monkeypatch):
    listing = FakeListing(LISTING)
    monkeypatch.setattr(FinanceDataReader, "StockListing", listing)
    prices = load_prices("AAPL", source="fdr")
    assert listing.calls == 0 and "boards" not in prices.attrs


def test_a_listing_without_the_columns_is_no_board(fdr_offline, monkeypatch):
    monkeypatch.setattr(
        FinanceDataReader, "StockListing", FakeListing(pd.DataFrame({"Symbol": ["005930"]}))
    )
    with pytest.warns(UserWarning, match="no Code and Market columns"):
        prices = load_prices("005930", source="fdr")
    assert "boards" not in prices.attrs


def test_konex_listing_warns_and_uses_kospi(fdr_offline, monkeypatch):
    table = pd.DataFrame({"Code": ["005930"], "Market": ["KONEX"]})
    monkeypatch.setattr(FinanceDataReader, "StockListing", FakeListing(table))
    prices = load_prices("005930", source="fdr")
    with pytest.warns(UserWarning, match="KONEX"):
        env = StockTradingEnv(prices, window_size=5)
    assert env.rules.boards == ("kospi",)


def test_a_code_missing_from_the_listing_warns(fdr_offline, monkeypatch):
    monkeypatch.setattr(FinanceDataReader, "StockListing", FakeListing(LISTING))
    with pytest.warns(UserWarning, match=r"\['123456'\] not in the KRX listing"):
        prices = load_prices(["005930", "123456"], source="fdr")
    assert prices.attrs["boards"] == {"005930": "KOSPI"}
