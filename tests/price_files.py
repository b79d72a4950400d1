"""Helpers of the load_prices tests: small CSV files written by hand and checks of a
tidy price frame."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

import stockgym.data as sd
from stockgym.data import load_prices

SAMPLE_DIR = Path(sd.__file__).parent / "sample"
FIELDS = ["open", "high", "low", "close", "volume", "tradable"]
HEADER = "Date,Open,High,Low,Close,Volume\n"
GOOD_ROWS = [
    "2020-01-02,10,11,9,10.5,100",
    "2020-01-03,10.5,12,10,11,200",
    "2020-01-06,11,11.5,10.2,10.8,150",
]


def write_csv(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows_csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "p.csv") -> Path:
    return write_csv(tmp_path, header + "\n".join(rows) + "\n", name)


def load_csv(path: Path, **kw) -> pd.DataFrame:
    return load_prices(str(path), source="csv", **kw)


def where(path: Path) -> str:
    """Regex matching the path as it appears in error messages."""
    return re.escape(str(path))


def log_returns(close: pd.Series) -> pd.Series:
    return np.log(close).diff().dropna()


def assert_tidy(df: pd.DataFrame) -> None:
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "date"
    assert df.index.tz is None
    assert df.index.is_monotonic_increasing
    assert df.index.is_unique
    assert (df.index == df.index.normalize()).all()
