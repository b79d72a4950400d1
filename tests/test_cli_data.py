"""`stockgym data show|fetch|list` through the real entry point, and the README/CI sync."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import FinanceDataReader
import numpy as np
import pandas as pd
import pytest

from stockgym.cli import main

ROOT = Path(__file__).resolve().parents[1]


def fake_us(symbol, start=None, end=None, *args, **kwargs):
    idx = pd.bdate_range("2020-01-01", periods=30)
    close = np.linspace(100, 110, len(idx))
    return pd.DataFrame(
        {
            "Open": close,
            "High": close + 1,
            "Low": close - 1,
            "Close": close,
            "Adj Close": close / 2,
            "Volume": np.full(len(idx), 1000.0),
        },
        index=idx,
    )


def test_show_sample_prints_rows_range_and_stats(capsys):
    assert main(["data", "show", "AAPL", "--source", "sample", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "rows 3270" in out
    assert "from 2000-03-01 to 2013-03-01" in out
    assert "adjusted prices" in out
    assert "annualised vol" in out
    assert "299301389" in out and "299301389.0" not in out  # volumes print as whole shares


def test_show_raw_and_range(capsys):
    assert (
        main(
            [
                "data",
                "show",
                "AAPL",
                "--source",
                "sample",
                "--raw",
                "--start",
                "2005-01-03",
                "--end",
                "2005-01-31",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "raw prices" in out
    assert "from 2005-01-03 to 2005-01-31" in out


def test_show_synthetic_is_seeded(capsys):
    main(["data", "show", "X", "--source", "synthetic", "--seed", "4"])
    a = capsys.readouterr().out
    main(["data", "show", "X", "--source", "synthetic", "--seed", "4"])
    assert capsys.readouterr().out == a


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "show", "NOPE", "--source", "sample"], "unknown sample symbol 'NOPE'"),
        (["data", "show", "missing.csv", "--source", "csv"], "file not found"),
        (["data", "show", "AAPL", "--source", "sample", "--start", "2030-01-01"], "no rows"),
    ],
)
def test_show_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_fetch_then_list_uses_cache(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(symbol, start=None, end=None, *a, **k):
        calls.append(symbol)
        return fake_us(symbol, start, end)

    monkeypatch.setattr(FinanceDataReader, "DataReader", fake)
    cache = str(tmp_path / "cache")
    argv = [
        "data",
        "fetch",
        "AAPL",
        "--start",
        "2020-01-01",
        "--end",
        "2020-02-10",
        "--cache-dir",
        cache,
    ]
    assert main(argv) == 0
    assert "AAPL: 29 rows" in capsys.readouterr().out  # 30 bars, the last after --end
    assert main(argv) == 0  # second time: served from the cache
    assert calls == ["AAPL"]
    assert main(["data", "list", "--cache-dir", cache]) == 0
    listing = capsys.readouterr().out
    assert "AAPL" in listing and "2020-01-01" in listing


def test_fetch_without_network_names_offline_sources(tmp_path, monkeypatch, capsys):
    def dead(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(FinanceDataReader, "DataReader", dead)
    assert main(["data", "fetch", "AAPL", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--source sample" in err and "Traceback" not in err


def test_list_empty_cache(tmp_path, capsys):
    assert main(["data", "list", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "empty" in capsys.readouterr().out


def test_help_has_examples():
    out = subprocess.run(
        [sys.executable, "-m", "stockgym.cli", "data", "show", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "examples:" in out and "--source sample" in out


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    commands = [b for b in blocks if "pytest" in b]
    assert len(commands) == 1, "README must give exactly one test command"
    assert commands[0].strip() in (ROOT / ".ci" / "run").read_text()
